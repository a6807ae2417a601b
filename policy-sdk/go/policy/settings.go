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
// keyed by their exact names. Absent or null settings give an empty map.
func SettingsObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return map[string]json.RawMessage{}, nil
	}
	if trimmed[0] != '{' {
		return nil, fmt.Errorf("settings must be a JSON object, got %s", truncate(trimmed))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil {
		return nil, fmt.Errorf("settings are not a valid JSON object: %w", err)
	}
	return fields, nil
}

// IsNull reports whether a raw JSON value is absent or null.
func IsNull(raw json.RawMessage) bool {
	trimmed := bytes.TrimSpace(raw)
	return len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null"))
}
