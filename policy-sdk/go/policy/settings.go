package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
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
	trimmed := bytes.TrimSpace(raw)
	fields := map[string]json.RawMessage{}
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return fields, nil
	}
	if trimmed[0] != '{' {
		return nil, fmt.Errorf("settings must be a JSON object, got %s", truncate(trimmed))
	}
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
			if _, seen := fields[key]; seen {
				return nil, fmt.Errorf("settings field %q is given twice: keep one", key)
			}
			fields[key] = value
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
