package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"tmc.dev/policy-sdk/go/policy"
)

// Mode says what to do when no candidate matches.
type Mode string

const (
	// ModeRequired places only on matching targets; none match: nowhere.
	ModeRequired Mode = "required"
	// ModePreferred prefers matching targets; none match: all candidates.
	ModePreferred Mode = "preferred"
)

// Settings are {"mode": "required"|"preferred", "maxTargets": n}; absent or
// null settings mean required mode without a limit.
type Settings struct {
	Mode Mode
	// MaxTargets keeps at most this many targets (the most preferred); nil: no limit.
	MaxTargets *uint32
}

// parseSettings checks the shape of the settings: an object with only the
// known fields, each of the right type.
func parseSettings(raw json.RawMessage) (Settings, error) {
	settings := Settings{Mode: ModeRequired}
	fields, err := policy.SettingsFields(raw)
	if err != nil {
		return settings, fmt.Errorf("invalid settings: %w", err)
	}
	// Sorted keys: the first error reported does not depend on their order.
	for _, field := range fields {
		key, value := field.Key, field.Value
		switch key {
		case "mode":
			mode, err := policy.SettingsString(value)
			if err != nil || (mode != string(ModeRequired) && mode != string(ModePreferred)) {
				return settings, fmt.Errorf(`invalid settings: mode must be "required" or "preferred", got %s`, value)
			}
			settings.Mode = Mode(mode)
		case "maxTargets":
			if policy.IsNull(value) {
				continue
			}
			n, err := strconv.ParseUint(string(bytes.TrimSpace(value)), 10, 32)
			if err != nil {
				return settings, fmt.Errorf("invalid settings: maxTargets must be a whole number from 1 to 4294967295, got %s", value)
			}
			limit := uint32(n)
			settings.MaxTargets = &limit
		default:
			return settings, fmt.Errorf(`invalid settings: unknown field %q, expected "mode" or "maxTargets"`, key)
		}
	}
	return settings, nil
}

// validate checks values beyond their JSON shape.
func (s Settings) validate() error {
	if s.MaxTargets != nil && *s.MaxTargets == 0 {
		return errors.New("maxTargets must be at least 1 (omit it for no limit)")
	}
	return nil
}
