package config

import (
	"net/url"
	"reflect"

	"gopkg.in/yaml.v3"
)

// Redacted is the text put in place of a secret.
const Redacted = "<redacted>"

// MarshalRedacted renders the configuration, defaults included, as YAML with
// every string under a field tagged `secret:"true"` (passwords, tokens,
// header values) replaced by Redacted, the arguments of a `secret:"args"`
// argv (its program kept), and the user, path and query of a
// `secret:"url"` URL (see RedactURL). The receiver is not changed, and the
// result loads again.
func (c *Config) MarshalRedacted() ([]byte, error) {
	cp := redactedCopy(reflect.ValueOf(c).Elem(), false)
	return yaml.Marshal(cp.Addr().Interface())
}

// RedactURL keeps the scheme and host of a URL and replaces what may carry
// a credential: user information, the path (a webhook's token is often
// there) and the query. A URL that does not parse is redacted whole.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return Redacted
	}
	out := u.Scheme + "://" + u.Host
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		out += "/" + Redacted
	}
	return out
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
			switch f := v.Field(i); t.Field(i).Tag.Get("secret") {
			case "url":
				out.Field(i).Set(f)
				if f.Len() > 0 && !secret {
					out.Field(i).SetString(RedactURL(f.String()))
				} else if f.Len() > 0 {
					out.Field(i).SetString(Redacted)
				}
			case "args":
				out.Field(i).Set(redactedCopy(f, secret))
				for j := 1; j < f.Len(); j++ {
					out.Field(i).Index(j).SetString(Redacted)
				}
			default:
				out.Field(i).Set(redactedCopy(f, secret || t.Field(i).Tag.Get("secret") == "true"))
			}
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
	case reflect.Interface:
		if !v.IsNil() {
			out.Set(redactedCopy(v.Elem(), secret))
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
