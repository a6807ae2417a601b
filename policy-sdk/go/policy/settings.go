package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("settings are not a valid JSON object: %w", err)
	}
	for dec.More() {
		token, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("settings are not a valid JSON object: %w", err)
		}
		key, _ := token.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, fmt.Errorf("settings field %q is not valid JSON: %w", key, err)
		}
		if _, seen := fields[key]; seen {
			return nil, fmt.Errorf("settings field %q is given twice: keep one", key)
		}
		fields[key] = value
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("settings are not a valid JSON object: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("settings have data after the object: %s", truncate(trimmed))
	}
	return fields, nil
}

// IsNull reports whether a raw JSON value is absent or null.
func IsNull(raw json.RawMessage) bool {
	trimmed := bytes.TrimSpace(raw)
	return len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null"))
}
