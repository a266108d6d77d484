/*
 * json.c - see json.h. Recursive descent over RFC 8259, depth-bounded.
 */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct parser {
    const char *p;
    int depth;
} parser;

static void skip_ws(parser *ps) {
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static json *node(json_type t) {
    json *j = calloc(1, sizeof(*j));
    if (j != NULL)
        j->type = t;
    return j;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* A string after its opening quote; escapes of code points above 0x7f are
 * kept as '?' (tests compare ASCII). */
static char *parse_string_body(parser *ps) {
    size_t cap = 32, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    for (;;) {
        unsigned char c = (unsigned char)*ps->p++;
        if (c == '"')
            break;
        if (c < 0x20) { /* includes the terminating NUL: unterminated */
            free(buf);
            return NULL;
        }
        if (c == '\\') {
            char e = *ps->p++;
            unsigned u;
            switch (e) {
            case '"':
                c = '"';
                break;
            case '\\':
                c = '\\';
                break;
            case '/':
                c = '/';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u':
                if (!hex4(ps->p, &u)) {
                    free(buf);
                    return NULL;
                }
                ps->p += 4;
                c = u < 0x80 ? (unsigned char)u : '?';
                break;
            default:
                free(buf);
                return NULL;
            }
        }
        if (n + 2 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        buf[n++] = (char)c;
    }
    buf[n] = '\0';
    return buf;
}

static json *parse_value(parser *ps);

static int append(json *parent, json *child) {
    json **items = realloc(parent->items, (parent->count + 1) * sizeof(*items));
    if (items == NULL)
        return 0;
    parent->items = items;
    parent->items[parent->count++] = child;
    return 1;
}

static json *parse_container(parser *ps, int object) {
    json *j = node(object ? JSON_OBJECT : JSON_ARRAY);
    if (j == NULL || ++ps->depth > MAX_DEPTH)
        goto fail;
    ps->p++; /* [ or { */
    skip_ws(ps);
    if (*ps->p == (object ? '}' : ']')) {
        ps->p++;
        ps->depth--;
        return j;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(ps);
        if (object) {
            if (*ps->p != '"')
                goto fail;
            ps->p++;
            key = parse_string_body(ps);
            skip_ws(ps);
            if (key == NULL || *ps->p != ':') {
                free(key);
                goto fail;
            }
            ps->p++;
        }
        json *child = parse_value(ps);
        if (child == NULL) {
            free(key);
            goto fail;
        }
        child->key = key;
        if (!append(j, child)) {
            json_free(child);
            goto fail;
        }
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p != (object ? '}' : ']'))
            goto fail;
        ps->p++;
        ps->depth--;
        return j;
    }
fail:
    json_free(j);
    return NULL;
}

static json *parse_number(parser *ps) {
    const char *s = ps->p;
    int integer = 1;
    if (*ps->p == '-') {
        integer = 0;
        ps->p++;
    }
    if (*ps->p == '0') {
        ps->p++;
    } else if (*ps->p >= '1' && *ps->p <= '9') {
        while (*ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    } else {
        return NULL;
    }
    if (*ps->p == '.') {
        integer = 0;
        ps->p++;
        if (!(*ps->p >= '0' && *ps->p <= '9'))
            return NULL;
        while (*ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    if (*ps->p == 'e' || *ps->p == 'E') {
        integer = 0;
        ps->p++;
        if (*ps->p == '+' || *ps->p == '-')
            ps->p++;
        if (!(*ps->p >= '0' && *ps->p <= '9'))
            return NULL;
        while (*ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    json *j = node(JSON_NUMBER);
    if (j == NULL)
        return NULL;
    j->number = strtod(s, NULL);
    if (integer)
        j->integer = strtoull(s, NULL, 10);
    return j;
}

static json *parse_literal(parser *ps, const char *word, json_type t, int value) {
    size_t n = strlen(word);
    if (strncmp(ps->p, word, n) != 0)
        return NULL;
    ps->p += n;
    json *j = node(t);
    if (j != NULL)
        j->boolean = value;
    return j;
}

static json *parse_value(parser *ps) {
    skip_ws(ps);
    switch (*ps->p) {
    case '{':
        return parse_container(ps, 1);
    case '[':
        return parse_container(ps, 0);
    case '"': {
        ps->p++;
        char *s = parse_string_body(ps);
        json *j = s != NULL ? node(JSON_STRING) : NULL;
        if (j == NULL)
            free(s);
        else
            j->string = s;
        return j;
    }
    case 't':
        return parse_literal(ps, "true", JSON_BOOL, 1);
    case 'f':
        return parse_literal(ps, "false", JSON_BOOL, 0);
    case 'n':
        return parse_literal(ps, "null", JSON_NULL, 0);
    default:
        return parse_number(ps);
    }
}

json *json_parse(const char *text) {
    parser ps = {text, 0};
    json *j = parse_value(&ps);
    skip_ws(&ps);
    if (j != NULL && *ps.p != '\0') {
        json_free(j);
        return NULL;
    }
    return j;
}

void json_free(json *j) {
    if (j == NULL)
        return;
    for (size_t i = 0; i < j->count; i++)
        json_free(j->items[i]);
    free(j->items);
    free(j->string);
    free(j->key);
    free(j);
}

const json *json_get(const json *obj, const char *key) {
    if (obj == NULL || obj->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->items[i]->key, key) == 0)
            return obj->items[i];
    return NULL;
}

const json *json_at(const json *arr, size_t i) {
    if (arr == NULL || arr->type != JSON_ARRAY || i >= arr->count)
        return NULL;
    return arr->items[i];
}
