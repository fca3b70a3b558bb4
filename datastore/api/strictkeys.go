package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// encoding/json matches object keys to fields case-insensitively, so `CIDR:` would silently fill
// `cidr` (and `cidr` plus `Cidr` would silently overwrite each other). Calico's API machinery is
// case-sensitive; checkExactKeys restores that by walking the decoded JSON beside the Go type. The
// same walk reports truly unknown keys with their path, which encoding/json does not give.

var fieldNamesCache sync.Map // reflect.Type -> map[string]reflect.Type

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldNamesCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	fieldNamesCache.Store(t, m)
	return m
}

// checkExactKeys reports the first object key that is not a field name of the type at its path,
// with a hint when it matches one only when case is ignored.
func checkExactKeys(t reflect.Type, v any, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		fields := jsonFields(t)
		for k, val := range obj {
			ft, ok := fields[k]
			if !ok {
				for name := range fields {
					if strings.EqualFold(name, k) {
						return fmt.Errorf("unknown field %q at %s (field names are case-sensitive: did you mean %q?)", k, strings.TrimPrefix(path, "."), name)
					}
				}
				// Name the path: encoding/json's own message does not say where the key is.
				if path == "" {
					return fmt.Errorf("unknown field %q", k)
				}
				return fmt.Errorf("unknown field %q at %s", k, strings.TrimPrefix(path, "."))
			}
			if err := checkExactKeys(ft, val, path+"."+k); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if arr, ok := v.([]any); ok {
			for i, e := range arr {
				if err := checkExactKeys(t.Elem(), e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if obj, ok := v.(map[string]any); ok {
			for k, e := range obj {
				if err := checkExactKeys(t.Elem(), e, path+"["+k+"]"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkExactKeysJSON(r Resource, js []byte) error {
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		return nil // the typed decode reports malformed input
	}
	return checkExactKeys(reflect.TypeOf(r), v, "")
}

// checkDuplicateKeysJSON refuses a key given twice in one object with different values, as
// checkDuplicateKeys does for YAML: encoding/json silently keeps the last, so `"cidr"` given twice
// would store whichever came second without a word. Malformed input is left to the typed decode.
func checkDuplicateKeysJSON(js []byte, path string) error {
	js = bytes.TrimSpace(js)
	if len(js) == 0 {
		return nil
	}
	switch js[0] {
	case '{':
		dec := json.NewDecoder(bytes.NewReader(js))
		if _, err := dec.Token(); err != nil {
			return nil
		}
		seen := map[string]json.RawMessage{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil
			}
			k, ok := tok.(string)
			if !ok {
				return nil
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil
			}
			at := strings.TrimPrefix(path+"."+k, ".")
			if prev, ok := seen[k]; ok && !sameJSON(prev, raw) {
				return fmt.Errorf("key %q at %s is given twice with different values", k, at)
			}
			seen[k] = raw
			if err := checkDuplicateKeysJSON(raw, path+"."+k); err != nil {
				return err
			}
		}
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(js, &items); err != nil {
			return nil
		}
		for i, item := range items {
			if err := checkDuplicateKeysJSON(item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameJSON compares two JSON values by their compact form.
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}
