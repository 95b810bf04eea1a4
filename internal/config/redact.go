package config

import (
	"reflect"

	"gopkg.in/yaml.v3"
)

// Redacted is the text put in place of a secret.
const Redacted = "<redacted>"

// MarshalRedacted renders the configuration, defaults included, as YAML with
// every field tagged `secret:"true"` replaced by Redacted. The receiver is
// not changed.
func (c *Config) MarshalRedacted() ([]byte, error) {
	cp := redactedCopy(reflect.ValueOf(c).Elem(), false)
	return yaml.Marshal(cp.Addr().Interface())
}

// redactedCopy deep-copies v, blanking strings under a secret field.
func redactedCopy(v reflect.Value, secret bool) reflect.Value {
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			out.Set(redactedCopy(v.Elem(), secret).Addr())
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			if !t.Field(i).IsExported() {
				continue
			}
			out.Field(i).Set(redactedCopy(v.Field(i), secret || t.Field(i).Tag.Get("secret") == "true"))
		}
	case reflect.Slice:
		if !v.IsNil() {
			out.Set(reflect.MakeSlice(v.Type(), v.Len(), v.Len()))
			for i := 0; i < v.Len(); i++ {
				out.Index(i).Set(redactedCopy(v.Index(i), secret))
			}
		}
	case reflect.Map:
		if !v.IsNil() {
			out.Set(reflect.MakeMap(v.Type()))
			for it := v.MapRange(); it.Next(); {
				out.SetMapIndex(it.Key(), redactedCopy(it.Value(), secret))
			}
		}
	case reflect.String:
		if secret && v.Len() > 0 {
			out.SetString(Redacted)
		} else {
			out.Set(v)
		}
	default:
		out.Set(v)
	}
	return out
}
