/*
 * json.h - a small strict JSON reader for the tests and tools that parse what
 * the library and tools print (bh_registry_dump with BH_DUMP_JSON, --json
 * outputs, bh-trackd's stats for bh-demo). A static library (bh_json).
 *
 * Owns: parsing one JSON text into a tree, and lookups in that tree.
 * Must never: accept what is not JSON (a test that parses output must fail
 * on malformed output), or be linked into the library.
 */
#ifndef BH_JSON_H
#define BH_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json {
    json_type type;
    int boolean;
    double number;
    uint64_t integer; /* numbers written as non-negative integers, exactly */
    char *string;     /* JSON_STRING; for members of an object, key holds the name */
    char *key;
    struct json **items; /* JSON_ARRAY and JSON_OBJECT */
    size_t count;
} json;

/* Parses the whole text (whitespace around it allowed). NULL if it is not
 * exactly one JSON value. */
json *json_parse(const char *text);
void json_free(json *j);
/* Member of an object, or NULL. */
const json *json_get(const json *obj, const char *key);
/* Element i of an array, or NULL. */
const json *json_at(const json *arr, size_t i);

#endif /* BH_JSON_H */
