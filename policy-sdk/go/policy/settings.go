package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// SettingsFunc judges a policy's settings. Return a verdict with Valid false
// and a message for settings a user got wrong; return an error only when the
// policy itself fails.
type SettingsFunc func(SettingsRequest) (SettingsVerdict, error)

var settingsFunc SettingsFunc = acceptNoSettings

// RegisterSettings makes fn answer tmc_validate_settings. Call it from an
// init function (a policy module runs package initialization, never main).
// Without it the module accepts only absent, null or {} settings.
func RegisterSettings(fn SettingsFunc) {
	settingsFunc = fn
}

// HandleValidateSettings answers one tmc_validate_settings call.
func HandleValidateSettings(input []byte) []byte {
	return Handle("tmc_validate_settings", input, settingsFunc)
}

func acceptNoSettings(req SettingsRequest) (SettingsVerdict, error) {
	fields, err := SettingsObject(req.Settings)
	if err != nil {
		return SettingsVerdict{Valid: false, Message: err.Error()}, nil
	}
	if len(fields) != 0 {
		return SettingsVerdict{Valid: false, Message: "this policy takes no settings: remove them from the placement"}, nil
	}
	return SettingsVerdict{Valid: true}, nil
}

// SettingsObject decodes settings that must be a JSON object into its fields,
// keyed by their exact (case-sensitive) names; a key given twice is an
// error. Absent or null settings give an empty map.
func SettingsObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	list, err := SettingsFields(raw)
	if err != nil {
		return nil, err
	}
	fields := make(map[string]json.RawMessage, len(list))
	for _, f := range list {
		fields[f.Key] = f.Value
	}
	return fields, nil
}

// SettingsField is one member of a settings object.
type SettingsField struct {
	Key   string
	Value json.RawMessage
}

// SettingsFields decodes settings that must be a JSON object into its
// members sorted by name (exact, case-sensitive names); a key given twice is
// an error. Absent or null settings give none. Like SettingsObject without a
// map: cheaper in a policy module, and in a fixed order.
func SettingsFields(raw json.RawMessage) ([]SettingsField, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return nil, nil
	}
	if trimmed[0] != '{' {
		return nil, fmt.Errorf("settings must be a JSON object, got %s", truncate(trimmed))
	}
	var fields []SettingsField
	r := &reader{data: string(trimmed)}
	invalid := func(err error) error {
		return fmt.Errorf("settings are not a valid JSON object: %w", err)
	}
	r.pos++ // the '{'
	if r.peek() == '}' {
		r.pos++
	} else {
		for {
			if r.peek() != '"' {
				return nil, invalid(r.errorf("expected a member name, got %s", r.describe()))
			}
			key, err := r.str()
			if err != nil {
				return nil, invalid(err)
			}
			if r.peek() != ':' {
				return nil, invalid(r.errorf("expected ':' after the member name"))
			}
			r.pos++
			value, err := r.raw()
			if err != nil {
				return nil, fmt.Errorf("settings field %q is not valid JSON: %w", key, err)
			}
			for _, f := range fields {
				if f.Key == key {
					return nil, fmt.Errorf("settings field %q is given twice: keep one", key)
				}
			}
			fields = append(fields, SettingsField{key, value})
			if c := r.peek(); c == ',' {
				r.pos++
				continue
			} else if c == '}' {
				r.pos++
				break
			}
			return nil, invalid(r.errorf("expected ',' or '}' after the member"))
		}
	}
	if r.end() != nil {
		return nil, fmt.Errorf("settings have data after the object: %s", truncate(trimmed))
	}
	slices.SortFunc(fields, func(a, b SettingsField) int { return strings.Compare(a.Key, b.Key) })
	return fields, nil
}

// SettingsString decodes a JSON string of settings (a value of
// SettingsObject); null gives "", as encoding/json does.
func SettingsString(raw json.RawMessage) (string, error) {
	r := &reader{data: string(raw)}
	var s string
	err := r.setString(&s)
	if err == nil {
		err = r.end()
	}
	return s, err
}

// IsNull reports whether a raw JSON value is absent or null.
func IsNull(raw json.RawMessage) bool {
	trimmed := bytes.TrimSpace(raw)
	return len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null"))
}
