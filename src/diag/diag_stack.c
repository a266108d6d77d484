/*
 * diag_stack.c - capturing call stacks cheaply, symbolizing them when printed.
 *
 * Owns: stack capture (raw return addresses, no symbol lookup: libunwind's
 * unw_backtrace when it is installed, else glibc's backtrace()), and
 * symbolization to function and, where debug information
 * exists, file:line, with each inlined call as a frame of its own (libdw's
 * scopes: the inlined subroutines around a pc and their call sites). Symbols come from libdw (elfutils),
 * loaded with dlopen at print time so the library has no hard runtime dependency on it; when it is not
 * installed, dladdr gives what the dynamic symbol tables know. Must never: symbolize while capturing (capture
 * sits on the API path of a registry with stacks on), or load libdw before something is printed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
#include <dwarf.h>
#include <elfutils/libdwfl.h>
#endif
#if defined(BH_HAVE_MEMCHECK_H) && BH_HAVE_MEMCHECK_H
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif
#include "common/sanitize.h"
#define SANITIZED (BH__ASAN || BH__TSAN)

#include "diag.h"

/* ======================== Capture ======================== */

/* The unwinder. libunwind's unw_backtrace (libunwind8, loaded with dlopen
 * the first time a stack is captured) caches what it learns from the unwind
 * tables and takes about 50 ns for a dozen frames here; glibc's backtrace()
 * walks them afresh every time, about 1 us. backtrace() when libunwind is
 * not installed. */
typedef int (*unwind_fn)(void **buf, int size);
static unwind_fn unwinder; /* written once under unwinder_once */
static pthread_once_t unwinder_once = PTHREAD_ONCE_INIT;

static void load_unwinder(void) {
    unwinder = backtrace;
    /* libunwind probes addresses with write(2) on a pipe, which memcheck
     * reports as a bad syscall parameter, and its per-thread destructor runs
     * after ThreadSanitizer has torn the thread down: under a checker, speed
     * matters less. */
    if (getenv("BH_NO_LIBUNWIND") != NULL || RUNNING_ON_VALGRIND || SANITIZED)
        return;
    void *lib = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    void *fn = lib != NULL ? dlsym(lib, "unw_backtrace") : NULL;
    if (fn != NULL)
        memcpy(&unwinder, &fn, sizeof(fn)); /* see DW_SYM below */
}

__attribute__((noinline)) void bh__stack_capture(bh__stack *out) {
    void *buf[BH__STACK_DEPTH + 1];
    pthread_once(&unwinder_once, load_unwinder);
    int n = unwinder(buf, BH__STACK_DEPTH + 1);
    /* buf[0] is inside this function: the caller's stack starts at 1. */
    uint32_t depth = n > 1 ? (uint32_t)(n - 1) : 0;
    memcpy(out->pc, buf + 1, depth * sizeof(void *));
    out->depth = depth;
}

uint64_t bh__stack_hash(const bh__stack *s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a over the addresses */
    for (uint32_t i = 0; i < s->depth; i++) {
        h ^= (uint64_t)(uintptr_t)s->pc[i];
        h *= 0x100000001b3ull;
    }
    return h != 0 ? h : 1;
}

/* ======================== libdw, loaded on demand ======================== */

#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
typedef struct dw_api {
    __typeof__(dwfl_begin) *begin;
    __typeof__(dwfl_end) *end;
    __typeof__(dwfl_linux_proc_report) *proc_report;
    __typeof__(dwfl_report_begin) *report_begin;
    __typeof__(dwfl_report_end) *report_end;
    __typeof__(dwfl_addrmodule) *addrmodule;
    __typeof__(dwfl_module_addrname) *addrname;
    __typeof__(dwfl_getsrc) *getsrc;
    __typeof__(dwfl_lineinfo) *lineinfo;
    __typeof__(dwfl_module_info) *module_info;
    __typeof__(dwfl_linux_proc_find_elf) *find_elf;
    __typeof__(dwfl_standard_find_debuginfo) *find_debuginfo;
    /* Inline chains: the scopes (DIEs) around a pc, innermost first. */
    __typeof__(dwfl_module_addrdie) *addrdie;
    __typeof__(dwarf_getscopes) *getscopes;
    __typeof__(dwarf_tag) *tag;
    __typeof__(dwarf_attr_integrate) *attr_integrate;
    __typeof__(dwarf_formstring) *formstring;
    __typeof__(dwarf_formudata) *formudata;
    __typeof__(dwarf_getsrcfiles) *getsrcfiles;
    __typeof__(dwarf_filesrc) *filesrc;
} dw_api;

static dw_api dw;
static int dw_loaded; /* under sym_lock: 0 not tried, 1 loaded, -1 unavailable */

/* Resolves every entry point or none. Under sym_lock. */
static int dw_load(void) {
    if (dw_loaded != 0)
        return dw_loaded > 0;
    dw_loaded = -1;
    if (getenv("BH_NO_LIBDW") != NULL) /* lets tests and users see the dladdr fallback */
        return 0;
    void *lib = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return 0;
        /* dlsym returns void *; converting it to a function pointer is what POSIX
         * requires to work, but ISO C does not define: go through memcpy. */
#define DW_SYM(field, name)                                                                                  \
    do {                                                                                                     \
        void *p = dlsym(lib, name);                                                                          \
        if (p == NULL)                                                                                       \
            return 0;                                                                                        \
        memcpy(&dw.field, &p, sizeof(p));                                                                    \
    } while (0)
    DW_SYM(begin, "dwfl_begin");
    DW_SYM(end, "dwfl_end");
    DW_SYM(proc_report, "dwfl_linux_proc_report");
    DW_SYM(report_begin, "dwfl_report_begin");
    DW_SYM(report_end, "dwfl_report_end");
    DW_SYM(addrmodule, "dwfl_addrmodule");
    DW_SYM(addrname, "dwfl_module_addrname");
    DW_SYM(getsrc, "dwfl_getsrc");
    DW_SYM(lineinfo, "dwfl_lineinfo");
    DW_SYM(module_info, "dwfl_module_info");
    DW_SYM(find_elf, "dwfl_linux_proc_find_elf");
    DW_SYM(find_debuginfo, "dwfl_standard_find_debuginfo");
    DW_SYM(addrdie, "dwfl_module_addrdie");
    DW_SYM(getscopes, "dwarf_getscopes");
    DW_SYM(tag, "dwarf_tag");
    DW_SYM(attr_integrate, "dwarf_attr_integrate");
    DW_SYM(formstring, "dwarf_formstring");
    DW_SYM(formudata, "dwarf_formudata");
    DW_SYM(getsrcfiles, "dwarf_getsrcfiles");
    DW_SYM(filesrc, "dwarf_filesrc");
#undef DW_SYM
    /* The library stays loaded for the process's life: symbolizing again
     * later must not pay for dlopen again, and dlclose is not worth a race. */
    dw_loaded = 1;
    return 1;
}
#endif

/* ======================== Symbolizer ======================== */

/* A demangled C++ name, kept until the session closes (frames point at it). */
typedef struct demangled_name {
    struct demangled_name *next;
    char name[];
} demangled_name;

struct bh__symbolizer {
#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
    Dwfl *dwfl;
    Dwfl_Callbacks callbacks;
#endif
    demangled_name *demangled;
    int dummy;
};

/* libdw's Dwfl is not thread-safe and dladdr's answers are only valid while
 * nothing is unloaded: one printer at a time. */
static pthread_mutex_t sym_lock = PTHREAD_MUTEX_INITIALIZER;

/* Held across fork() (diag.c): a child forked while a parent thread prints
 * a report would otherwise hang in its own first report. */
pthread_mutex_t *bh__symbolizer_lock(void) { return &sym_lock; }

bh__symbolizer *bh__symbolizer_open(void) {
    bh__symbolizer *sym = calloc(1, sizeof(*sym));
    if (sym == NULL)
        return NULL;
    pthread_mutex_lock(&sym_lock);
#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
    if (dw_load()) {
        sym->callbacks.find_elf = dw.find_elf;
        sym->callbacks.find_debuginfo = dw.find_debuginfo;
        sym->dwfl = dw.begin(&sym->callbacks);
        if (sym->dwfl != NULL) {
            dw.report_begin(sym->dwfl);
            if (dw.proc_report(sym->dwfl, getpid()) != 0 || dw.report_end(sym->dwfl, NULL, NULL) != 0) {
                dw.end(sym->dwfl);
                sym->dwfl = NULL;
            }
        }
    }
#endif
    return sym;
}

void bh__symbolizer_close(bh__symbolizer *sym) {
    if (sym == NULL)
        return;
#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
    if (sym->dwfl != NULL)
        dw.end(sym->dwfl);
#endif
    pthread_mutex_unlock(&sym_lock);
    while (sym->demangled != NULL) {
        demangled_name *d = sym->demangled;
        sym->demangled = d->next;
        free(d);
    }
    free(sym);
}

/* C++ callers read C++ names: "ns::f(int)" rather than "_ZN2ns1fEi". The
 * demangler is the C++ runtime's own, found only if the program loaded it
 * (a C program has no mangled names to show). On any failure: the raw name. */
typedef char *(*demangle_fn)(const char *name, char *buf, size_t *len, int *status);

static const char *demangle(bh__symbolizer *sym, const char *name) {
    if (sym == NULL || name == NULL || strncmp(name, "_Z", 2) != 0)
        return name;
    demangle_fn fn;
    /* dlsym returns void *; converting it to a function pointer is what POSIX
     * specifies and ISO C leaves undefined: go through memcpy. */
    void *p = dlsym(RTLD_DEFAULT, "__cxa_demangle");
    if (p == NULL)
        return name;
    memcpy(&fn, &p, sizeof(fn));
    int status = -1;
    char *plain = fn(name, NULL, NULL, &status);
    if (plain == NULL || status != 0) {
        free(plain);
        return name;
    }
    size_t len = strlen(plain) + 1;
    demangled_name *d = malloc(sizeof(*d) + len);
    if (d != NULL) {
        memcpy(d->name, plain, len);
        d->next = sym->demangled;
        sym->demangled = d;
    }
    free(plain);
    return d != NULL ? d->name : name;
}

/* The address to look up for pc: a return address (not exact) points after
 * the call, so the call itself is one byte before. */
static uintptr_t look_pc(void *pc, int exact) { return (uintptr_t)pc - (exact || pc == NULL ? 0 : 1); }

void bh__symbolize(bh__symbolizer *sym, void *pc, int exact, bh__frame *out) {
    memset(out, 0, sizeof(*out));
    out->pc = pc;
    uintptr_t look = look_pc(pc, exact);
#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
    if (sym != NULL && sym->dwfl != NULL) {
        Dwfl_Module *mod = dw.addrmodule(sym->dwfl, (Dwarf_Addr)look);
        if (mod != NULL) {
            Dwarf_Addr start = 0;
            out->module = dw.module_info(mod, NULL, &start, NULL, NULL, NULL, NULL, NULL);
            out->offset = (uintptr_t)pc - (uintptr_t)start;
            out->function = demangle(sym, dw.addrname(mod, (Dwarf_Addr)look));
            Dwfl_Line *line = dw.getsrc(sym->dwfl, (Dwarf_Addr)look);
            if (line != NULL) {
                int lineno = 0;
                out->file = dw.lineinfo(line, NULL, &lineno, NULL, NULL, NULL);
                out->line = lineno;
            }
            if (out->function != NULL)
                return;
        }
    }
#else
    (void)sym;
#endif
    Dl_info dl;
    if (dladdr((void *)look, &dl) != 0) {
        if (out->module == NULL)
            out->module = dl.dli_fname;
        out->offset = (uintptr_t)pc - (uintptr_t)dl.dli_fbase;
        out->function = demangle(sym, dl.dli_sname);
    }
}

#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
/* A DIE's name as the reader knows it: the linkage name demangled (C++),
 * else the plain name; both looked up through abstract origins, which is
 * where an inlined instance keeps them. */
static const char *die_name(bh__symbolizer *sym, Dwarf_Die *die) {
    Dwarf_Attribute attr;
    const char *name = NULL;
    if (dw.attr_integrate(die, DW_AT_linkage_name, &attr) != NULL)
        name = dw.formstring(&attr);
    if (name == NULL && dw.attr_integrate(die, DW_AT_name, &attr) != NULL)
        name = dw.formstring(&attr);
    return demangle(sym, name);
}

/* Where an inlined instance was called from: its DW_AT_call_file (an index
 * into the compilation unit's file table) and DW_AT_call_line. */
static void call_site(Dwarf_Die *cu, Dwarf_Die *inlined, const char **file, int *line) {
    Dwarf_Attribute attr;
    Dwarf_Word idx = 0, ln = 0;
    Dwarf_Files *files = NULL;
    size_t nfiles = 0;
    *file = NULL;
    *line = 0;
    if (dw.attr_integrate(inlined, DW_AT_call_line, &attr) != NULL && dw.formudata(&attr, &ln) == 0)
        *line = (int)ln;
    if (dw.attr_integrate(inlined, DW_AT_call_file, &attr) != NULL && dw.formudata(&attr, &idx) == 0 &&
        dw.getsrcfiles(cu, &files, &nfiles) == 0 && idx < nfiles)
        *file = dw.filesrc(files, idx, NULL, NULL);
}

/* The inline chain at a pc: one frame per inlined call, innermost first,
 * then the function they were inlined into. 0 when libdw has no scopes
 * there (no debug information): the caller falls back to one frame. */
static uint32_t inline_chain(bh__symbolizer *sym, const bh__frame *outer, uintptr_t look, bh__frame *out,
                             uint32_t max) {
    Dwfl_Module *mod = dw.addrmodule(sym->dwfl, (Dwarf_Addr)look);
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = mod != NULL ? dw.addrdie(mod, (Dwarf_Addr)look, &bias) : NULL;
    Dwarf_Die *scopes = NULL;
    int n = cu != NULL ? dw.getscopes(cu, (Dwarf_Addr)look - bias, &scopes) : -1;
    uint32_t k = 0;
    const char *file = outer->file;
    int line = outer->line;
    for (int i = 0; i < n && k + 1 < max; i++) {
        int tag = dw.tag(&scopes[i]);
        if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram)
            continue; /* lexical blocks */
        out[k] = *outer;
        out[k].file = file;
        out[k].line = line;
        if (tag == DW_TAG_subprogram) {
            /* The symbol table's name for the real function (what dladdr and
             * the rest of the report call it), the DIE's if it has none. */
            if (out[k].function == NULL)
                out[k].function = die_name(sym, &scopes[i]);
            k++;
            break;
        }
        out[k].function = die_name(sym, &scopes[i]);
        out[k].inlined = 1;
        k++;
        call_site(cu, &scopes[i], &file, &line);
    }
    free(scopes); /* dwarf_getscopes' array is malloc'ed */
    /* Only inlined frames (the subprogram not found): keep the function too. */
    if (k > 0 && out[k - 1].inlined && k < max) {
        out[k] = *outer;
        out[k].file = file;
        out[k].line = line;
        k++;
    }
    return k;
}
#endif

uint32_t bh__symbolize_inline(bh__symbolizer *sym, void *pc, int exact, bh__frame *out, uint32_t max) {
    if (max == 0)
        return 0;
    bh__symbolize(sym, pc, exact, &out[0]);
#if defined(BH_HAVE_LIBDW) && BH_HAVE_LIBDW
    if (sym != NULL && sym->dwfl != NULL && out[0].file != NULL) {
        bh__frame outer = out[0];
        uint32_t k = inline_chain(sym, &outer, look_pc(pc, exact), out, max);
        if (k > 0) /* 0: inline_chain wrote nothing, out[0] is still the plain frame */
            return k;
    }
#endif
    return 1;
}

/* ======================== Printing ======================== */

/* The library's entry points and internals, which every captured stack
 * starts with: the reader wants the caller. Public API functions are named
 * bh_ and internals bh__, the C++ wrapper's live in namespace bufhandle; the
 * shim's functions (bh_shim_) are the caller's porting layer and stay. */
static int is_library_frame(const bh__frame *f) {
    if (f->function == NULL)
        return 0;
    if (strncmp(f->function, "bufhandle::", 11) == 0)
        return 1;
    if (strncmp(f->function, "bh__", 4) == 0)
        return 1;
    return strncmp(f->function, "bh_", 3) == 0 && strncmp(f->function, "bh_shim_", 8) != 0;
}

/* How deep the library's own frames can be: entry point, diagnostics layer,
 * and the helpers between them. Deeper bh_ frames are the caller's (say, an
 * allocator callback that calls back into the registry). */
#define LIBRARY_FRAMES_MAX 8u

uint32_t bh__stack_first_user_frame(bh__symbolizer *sym, const bh__stack *s) {
    uint32_t first = 0;
    for (uint32_t i = 0; i < s->depth && i < LIBRARY_FRAMES_MAX; i++) {
        bh__frame f;
        bh__symbolize(sym, s->pc[i], 0, &f);
        if (is_library_frame(&f))
            first = i + 1;
    }
    /* If every frame is the library's (a library thread), show them all. */
    return first < s->depth ? first : 0;
}

/* Frames one return address can expand to (inlined calls and their function). */
#define INLINE_MAX 8u

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash != NULL ? slash + 1 : path;
}

/* Stops at main: what the C runtime does before it is noise. */
static int is_last_frame(const bh__frame *f) {
    return f->function != NULL && strcmp(f->function, "main") == 0;
}

void bh__stack_print_text(FILE *out, bh__symbolizer *sym, const bh__stack *s, const char *indent) {
    if (s->depth == 0) {
        fprintf(out, "%s(no stack: set BH_DEBUG=stacks or BH_CONFIG_STACKS)\n", indent);
        return;
    }
    uint32_t n = 0;
    for (uint32_t i = bh__stack_first_user_frame(sym, s); i < s->depth; i++) {
        bh__frame fs[INLINE_MAX];
        uint32_t k = bh__symbolize_inline(sym, s->pc[i], 0, fs, INLINE_MAX);
        for (uint32_t j = 0; j < k; j++, n++) {
            const bh__frame *f = &fs[j];
            fprintf(out, "%s#%u %p in %s%s", indent, n, f->pc, f->function != NULL ? f->function : "??",
                    f->inlined ? " (inlined)" : "");
            if (f->file != NULL)
                fprintf(out, " at %s:%d", f->file, f->line);
            else if (f->module != NULL)
                fprintf(out, " (%s+0x%lx)", base_name(f->module), (unsigned long)f->offset);
            fputc('\n', out);
        }
        if (is_last_frame(&fs[k - 1]))
            break;
    }
}

/* Symbol names and paths are printed as JSON strings: escape what JSON
 * requires. */
void bh__json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

void bh__stack_print_json(FILE *out, bh__symbolizer *sym, const bh__stack *s) {
    fputc('[', out);
    uint32_t n = 0;
    for (uint32_t i = s->depth != 0 ? bh__stack_first_user_frame(sym, s) : 0; i < s->depth; i++) {
        bh__frame fs[INLINE_MAX];
        uint32_t k = bh__symbolize_inline(sym, s->pc[i], 0, fs, INLINE_MAX);
        for (uint32_t j = 0; j < k; j++, n++) {
            const bh__frame *f = &fs[j];
            fprintf(out, "%s{\"pc\":\"%p\",\"function\":", n ? "," : "", f->pc);
            if (f->function != NULL)
                bh__json_string(out, f->function);
            else
                fputs("null", out);
            if (f->inlined)
                fputs(",\"inlined\":true", out);
            if (f->file != NULL) {
                fputs(",\"file\":", out);
                bh__json_string(out, f->file);
                fprintf(out, ",\"line\":%d", f->line);
            }
            if (f->module != NULL) {
                fputs(",\"module\":", out);
                bh__json_string(out, f->module);
                fprintf(out, ",\"offset\":%lu", (unsigned long)f->offset);
            }
            fputc('}', out);
        }
        if (is_last_frame(&fs[k - 1]))
            break;
    }
    fputc(']', out);
}
