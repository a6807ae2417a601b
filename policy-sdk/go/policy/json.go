package policy

import "encoding/json"

// This file holds the JSON details that make Go output identical to the
// Rust types: nil maps and required nil lists encode as {} and [] (the Rust
// side rejects null there), and empty MapEdits are left out.

// MarshalJSON encodes a nil map as {}.
func (m StringMap) MarshalJSON() ([]byte, error) {
	if m == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(m))
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
	type plain PlacementDecision
	if d.Targets == nil {
		d.Targets = []TargetDecision{}
	}
	return json.Marshal(plain(d))
}

// MarshalJSON encodes nil Targets as [].
func (e PlacementDecisionExpectation) MarshalJSON() ([]byte, error) {
	type plain PlacementDecisionExpectation
	if e.Targets == nil {
		e.Targets = []TargetDecision{}
	}
	return json.Marshal(plain(e))
}

// MarshalJSON leaves out empty label and annotation edits.
func (r TransformResult) MarshalJSON() ([]byte, error) {
	out := struct {
		Labels      *MapEdits `json:"labels,omitempty"`
		Annotations *MapEdits `json:"annotations,omitempty"`
	}{}
	if !r.Labels.IsEmpty() {
		out.Labels = &r.Labels
	}
	if !r.Annotations.IsEmpty() {
		out.Annotations = &r.Annotations
	}
	return json.Marshal(out)
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
