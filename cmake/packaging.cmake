# Debian packages from one build tree (cpack -G DEB, run in the build
# directory; README "Install"):
#   libbufhandle0     the shared library (SONAME libbufhandle.so.0)
#   libbufhandle-dev  headers, static libraries, the shim, CMake package,
#                     .pc files, valgrind suppressions
#   bufhandle-trackd  bh-trackd, its man page, its systemd units
# Depends are computed by dpkg-shlibdeps; libbufhandle0 ships a shlibs file
# and an ldconfig trigger. Configure with -DCMAKE_INSTALL_PREFIX=/usr so the
# library lands in the multiarch directory (GNUInstallDirs picks it for /usr).
#
# Must never: install anything outside a component (cpack would drop it), or
# write a Depends by hand that dpkg-shlibdeps can compute.

set(BH_DEB_DOC_FILES ${PROJECT_BINARY_DIR}/packaging)
set(BH_DEB_MAINTAINER "bufhandle maintainers <maintainers@bufhandle.example.org>")
file(MAKE_DIRECTORY ${BH_DEB_DOC_FILES})

# The systemd units go where the install-time prefix says (install_units.cmake.in:
# /lib/systemd/system for /usr, PREFIX/lib/systemd/system elsewhere, user units
# in PREFIX/lib/systemd/user), naming that prefix's bh-trackd. Empty: those
# defaults; a relative directory is under the install prefix (a STRING: CMake
# would make a relative PATH absolute against the configure directory).
set(BH_SYSTEMD_SYSTEMUNITDIR "" CACHE STRING "systemd system unit directory (empty: by the install prefix)")
set(BH_SYSTEMD_USERUNITDIR "" CACHE STRING "systemd user unit directory (empty: PREFIX/lib/systemd/user)")
# Older build trees cached these absolute, from the configure-time prefix.
unset(BH_SYSTEMD_SYSTEM_DIR CACHE)
unset(BH_SYSTEMD_USER_DIR CACHE)
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  # The library is on the standard search path: no rpath in a package.
  set_target_properties(bh-trackd PROPERTIES INSTALL_RPATH "")
endif()
set(BH_UNITS_SRC ${PROJECT_SOURCE_DIR}/packaging/systemd)
set(BH_UNITS_STAGE ${BH_DEB_DOC_FILES}/units)
configure_file(cmake/install_units.cmake.in ${BH_DEB_DOC_FILES}/install_units.cmake @ONLY)
install(SCRIPT ${BH_DEB_DOC_FILES}/install_units.cmake COMPONENT trackd)

# The man page with the project's version, compressed as Debian wants it
# (gzip -9n: no name, no time).
find_program(BH_GZIP gzip REQUIRED)
add_custom_command(OUTPUT ${BH_DEB_DOC_FILES}/bh-trackd.1.gz
  COMMAND ${CMAKE_COMMAND} -DIN=${PROJECT_SOURCE_DIR}/docs/bh-trackd.1 -DOUT=${BH_DEB_DOC_FILES}/bh-trackd.1
          -DVERSION=${BH_VERSION_FULL} -P ${PROJECT_SOURCE_DIR}/cmake/man_page.cmake
  COMMAND ${BH_GZIP} -9nc ${BH_DEB_DOC_FILES}/bh-trackd.1 > ${BH_DEB_DOC_FILES}/bh-trackd.1.gz
  DEPENDS ${PROJECT_SOURCE_DIR}/docs/bh-trackd.1 ${PROJECT_SOURCE_DIR}/cmake/man_page.cmake VERBATIM)
add_custom_target(bh_man ALL DEPENDS ${BH_DEB_DOC_FILES}/bh-trackd.1.gz)
install(FILES ${BH_DEB_DOC_FILES}/bh-trackd.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT trackd)

# Every package carries /usr/share/doc/PACKAGE/{copyright, changelog.gz (the
# project's CHANGELOG.md), changelog.Debian.gz (this packaging's entry)}.
# A pre-release's Debian version has "~" for "-" ("0.4.0~dev"), which sorts
# before the release (0.4.0) as it should.
string(REPLACE "-" "~" BH_DEB_VERSION ${BH_VERSION_FULL})
string(TIMESTAMP BH_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
file(WRITE ${BH_DEB_DOC_FILES}/changelog.Debian
  "bufhandle (${BH_DEB_VERSION}-1) unstable; urgency=medium\n\n"
  "  * Packages of bufhandle ${BH_VERSION_FULL}, built with cpack from one build\n"
  "    tree; the project's changes are in changelog.gz.\n\n"
  " -- ${BH_DEB_MAINTAINER}  ${BH_DEB_DATE}\n")
set(BH_DEB_PACKAGES lib libbufhandle0 dev libbufhandle-dev trackd bufhandle-trackd)
add_custom_command(OUTPUT ${BH_DEB_DOC_FILES}/changelog.gz ${BH_DEB_DOC_FILES}/changelog.Debian.gz
  COMMAND ${BH_GZIP} -9nc ${PROJECT_SOURCE_DIR}/CHANGELOG.md > ${BH_DEB_DOC_FILES}/changelog.gz
  COMMAND ${BH_GZIP} -9nc ${BH_DEB_DOC_FILES}/changelog.Debian > ${BH_DEB_DOC_FILES}/changelog.Debian.gz
  DEPENDS ${PROJECT_SOURCE_DIR}/CHANGELOG.md ${BH_DEB_DOC_FILES}/changelog.Debian VERBATIM)
add_custom_target(bh_deb_changelog ALL
  DEPENDS ${BH_DEB_DOC_FILES}/changelog.gz ${BH_DEB_DOC_FILES}/changelog.Debian.gz)
while(BH_DEB_PACKAGES)
  list(POP_FRONT BH_DEB_PACKAGES comp pkg)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/copyright ${BH_DEB_DOC_FILES}/changelog.gz
                ${BH_DEB_DOC_FILES}/changelog.Debian.gz
    DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${pkg} COMPONENT ${comp})
  string(TOUPPER ${comp} COMP)
  set(CPACK_DEBIAN_${COMP}_PACKAGE_NAME ${pkg})
endwhile()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME bufhandle)
set(CPACK_PACKAGE_VENDOR "the bufhandle authors")
set(CPACK_PACKAGE_CONTACT "${BH_DEB_MAINTAINER}")
# Each package's synopsis is the first line of its own description (below);
# a project-wide summary would be prepended to all three.
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "")
set(CPACK_PACKAGE_VERSION ${BH_DEB_VERSION})
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL lib dev trackd)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.invalid/bufhandle")
# dpkg-shlibdeps computes Depends, also on our own library (found in the tree).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR})
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
# First line: the synopsis; cpack indents the rest and turns empty lines
# into Debian's " ." paragraph breaks.
set(CPACK_DEBIAN_LIB_DESCRIPTION "interned, reference-counted handles for device buffers
bufhandle replaces raw device-buffer objects with handles interned by
(device, address): every alias of an allocation is a reference to one
control block, and the allocator free and the FREE report happen exactly
once, when the last reference drops.

This package contains the shared library.")
file(WRITE ${BH_DEB_DOC_FILES}/triggers "activate-noawait ldconfig\n")
set(CPACK_DEBIAN_LIB_PACKAGE_CONTROL_EXTRA ${BH_DEB_DOC_FILES}/triggers)
set(CPACK_DEBIAN_LIB_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libbufhandle0 (= ${BH_DEB_VERSION}-1)")
set(CPACK_DEBIAN_DEV_DESCRIPTION "device-buffer handles library (development files)
bufhandle replaces raw device-buffer objects with handles interned by
(device, address), so that an allocation is freed and reported exactly once.

This package contains the headers (C11 and C++17), the static libraries,
the porting shim, the CMake package and pkg-config files, and valgrind
suppressions.")

set(CPACK_DEBIAN_TRACKD_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_TRACKD_DESCRIPTION "allocation tracking server for bufhandle and TT-Metal runtimes
bh-trackd receives the ALLOC and FREE reports of bufhandle's reporters (and
TT-Metal's allocation-tracking records) and reports unknown FREEs, duplicate
ALLOCs and leaks, with an HTTP API, Prometheus metrics and a dashboard.

Comes with systemd units (socket activation) for a system and a per-user
instance.")

include(CPack)
