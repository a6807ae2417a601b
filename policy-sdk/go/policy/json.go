package policy

import "encoding/json"

// This file holds the JSON details that make Go output identical to the
// Rust types: nil maps and required nil lists encode as {} and [] (the Rust
// side rejects null there), and empty MapEdits are left out. Output types
// encode without reflection (jsonwrite.go); request types, which only tests
// and test vectors encode, go through encoding/json.

// MarshalJSON encodes the map with sorted keys, and a nil map as {}.
func (m StringMap) MarshalJSON() ([]byte, error) {
	return appendStringMap(nil, m), nil
}

// MarshalJSON encodes nil Targets as [] and missing Settings as null.
func (r PlacementRequest) MarshalJSON() ([]byte, error) {
	type plain PlacementRequest
	if r.Targets == nil {
		r.Targets = []Target{}
	}
	if len(r.Settings) == 0 {
		r.Settings = nil
	}
	return json.Marshal(plain(r))
}

// MarshalJSON encodes missing Settings as null.
func (r TransformRequest) MarshalJSON() ([]byte, error) {
	type plain TransformRequest
	if len(r.Settings) == 0 {
		r.Settings = nil
	}
	return json.Marshal(plain(r))
}

// MarshalJSON encodes missing Settings as null.
func (r SettingsRequest) MarshalJSON() ([]byte, error) {
	type plain SettingsRequest
	if len(r.Settings) == 0 {
		r.Settings = nil
	}
	return json.Marshal(plain(r))
}

// MarshalJSON encodes nil Targets as [].
func (d PlacementDecision) MarshalJSON() ([]byte, error) {
	return d.appendJSON(nil), nil
}

// MarshalJSON encodes nil Targets as [].
func (e PlacementDecisionExpectation) MarshalJSON() ([]byte, error) {
	return e.appendJSON(nil), nil
}

// MarshalJSON leaves out empty label and annotation edits.
func (r TransformResult) MarshalJSON() ([]byte, error) {
	return r.appendJSON(nil), nil
}

// MarshalJSON leaves out empty set and remove lists.
func (e MapEdits) MarshalJSON() ([]byte, error) {
	return e.appendJSON(nil), nil
}

// MarshalJSON leaves out an empty message.
func (v SettingsVerdict) MarshalJSON() ([]byte, error) {
	return v.appendJSON(nil), nil
}

// MarshalJSON leaves out nil replicas.
func (d TargetDecision) MarshalJSON() ([]byte, error) {
	return d.appendJSON(nil), nil
}

// IsEmpty reports whether applying the edits changes nothing.
func (e MapEdits) IsEmpty() bool {
	return len(e.Set) == 0 && len(e.Remove) == 0
}

// ApplyTo applies the edits to m: sets first, then removals. It returns m, or
// a new map when m is nil and something is set.
func (e MapEdits) ApplyTo(m StringMap) StringMap {
	if m == nil && len(e.Set) > 0 {
		m = StringMap{}
	}
	for key, value := range e.Set {
		m[key] = value
	}
	for _, key := range e.Remove {
		delete(m, key)
	}
	return m
}
