# cmake -DIN=docs/bh-trackd.1 -DOUT=FILE -DVERSION=V -P man_page.cmake
# Writes the man page with the project's version in its .TH line ("bufhandle"
# becomes "bufhandle V"), so the page never names a version by hand.
# Must never: write a page whose .TH line was not found (it would name none).
file(READ "${IN}" page)
string(REGEX REPLACE "(\n\\.TH [^\n]* \"bufhandle)(\")" "\\1 ${VERSION}\\2" out "${page}")
if(out STREQUAL page)
  message(FATAL_ERROR "${IN}: no .TH line whose source field is \"bufhandle\"")
endif()
file(WRITE "${OUT}" "${out}")
