// Package policy holds the data that crosses the tmc host/guest boundary
// (version 1 of the ABI), label selector matching, and the glue that turns a
// Go package into a tmc policy module.
//
// The types mirror policy-sdk/src/abi.rs field for field and serialize to the
// same JSON: camelCase names, optional fields omitted exactly where the Rust
// side skips them, string maps as objects (never null) and required lists as
// arrays (never null).
package policy

import "encoding/json"

// ABIVersion is the ABI version this package speaks; a module exports it from
// tmc_abi_version.
const ABIVersion = 1

// StringMap is a string-to-string map. It encodes as a JSON object even when
// nil, and encoding/json writes its keys sorted, so output is deterministic.
type StringMap map[string]string

// Workload is what a policy sees of a workload: identity, metadata and
// desired replicas.
type Workload struct {
	// APIVersion is "apps/v1", "v1", ...
	APIVersion string `json:"apiVersion"`
	// Kind is "Deployment", "Service", ...
	Kind string `json:"kind"`
	// Namespace is empty for cluster-scoped objects.
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	Labels      StringMap `json:"labels"`
	Annotations StringMap `json:"annotations"`
	// Replicas is spec.replicas for kinds that have it; nil otherwise.
	Replicas *uint32 `json:"replicas,omitempty"`
}

// Location of a sync target, taken from its well-known topology labels.
type Location struct {
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
}

// Target is a physical cluster the policy may place onto.
type Target struct {
	// Name is the SyncTarget's name; a decision names targets by it.
	Name     string    `json:"name"`
	Labels   StringMap `json:"labels"`
	Location Location  `json:"location"`
	// Ready means the target's syncer heartbeats in time.
	Ready bool `json:"ready"`
	// Schedulable means the target accepts new placements (not cordoned).
	Schedulable bool `json:"schedulable"`
	// Capacity is how many replicas the target can still take, when known.
	Capacity *uint32 `json:"capacity,omitempty"`
	// Current is what the target holds of this workload now; nil when it holds no copy.
	Current *Assignment `json:"current,omitempty"`
}

// Assignment is what a target currently holds of the workload under evaluation.
type Assignment struct {
	Replicas *uint32 `json:"replicas,omitempty"`
}

// LabelSelector is a label selector in the Kubernetes shape.
type LabelSelector struct {
	MatchLabels      StringMap                  `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// Selector operators of LabelSelectorRequirement.
const (
	OpIn           = "In"
	OpNotIn        = "NotIn"
	OpExists       = "Exists"
	OpDoesNotExist = "DoesNotExist"
)

// LabelSelectorRequirement is one matchExpressions entry.
type LabelSelectorRequirement struct {
	Key string `json:"key"`
	// Operator is one of OpIn, OpNotIn, OpExists, OpDoesNotExist.
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Placement is the part of a ClusterWorkloadPlacement a placement policy needs.
type Placement struct {
	Name string `json:"name"`
	// LocationSelectors: targets must match one of them (an empty list matches all).
	LocationSelectors []LabelSelector `json:"locationSelectors,omitempty"`
	// LocationPreferences: preferred locations, most preferred first.
	LocationPreferences []LabelSelector `json:"locationPreferences,omitempty"`
}

// PlacementRequest is the input of tmc_place.
type PlacementRequest struct {
	Workload  Workload  `json:"workload"`
	Placement Placement `json:"placement"`
	// Settings are the policy's settings from the placement, already accepted
	// by the settings validator; JSON null when the placement gives none.
	Settings json.RawMessage `json:"settings"`
	// Targets are the candidate targets, sorted by name.
	Targets []Target `json:"targets"`
}

// TargetDecision is one chosen target and its share of replicas.
type TargetDecision struct {
	Name string `json:"name"`
	// Replicas is required when the workload has replicas, forbidden otherwise.
	Replicas *uint32 `json:"replicas,omitempty"`
}

// PlacementDecision is the output of tmc_place.
type PlacementDecision struct {
	// Targets are the chosen targets; empty means "place nowhere".
	Targets []TargetDecision `json:"targets"`
	// Reason is for people: shown in events, status and `tmcd policy eval`.
	Reason string `json:"reason"`
}

// TransformRequest is the input of tmc_transform: one chosen target's copy of
// the workload.
type TransformRequest struct {
	Workload Workload `json:"workload"`
	Target   Target   `json:"target"`
	// Replicas the placement gave this target, if the workload has replicas.
	Replicas *uint32         `json:"replicas,omitempty"`
	Settings json.RawMessage `json:"settings"`
}

// MapEdits are edits to one string map: keys to set, then keys to remove.
type MapEdits struct {
	Set    StringMap `json:"set,omitempty"`
	Remove []string  `json:"remove,omitempty"`
}

// TransformResult is the output of tmc_transform. Empty edits are omitted
// from the JSON.
type TransformResult struct {
	Labels      MapEdits `json:"labels"`
	Annotations MapEdits `json:"annotations"`
}

// SettingsRequest is the input of tmc_validate_settings.
type SettingsRequest struct {
	Settings json.RawMessage `json:"settings"`
}

// SettingsVerdict is the output of tmc_validate_settings.
type SettingsVerdict struct {
	Valid   bool   `json:"valid"`
	Message string `json:"message,omitempty"`
}

// Entry points a test vector can name.
const (
	EntryPlace     = "place"
	EntryTransform = "transform"
)

// TestVector is a case a module ships (export tmc_test_vectors); the host runs
// them before activating the module and refuses it if one fails. Input and
// Expect are kept raw: decode them with PlaceCase or TransformCase.
type TestVector struct {
	// EntryPoint is EntryPlace or EntryTransform.
	EntryPoint string          `json:"entryPoint"`
	Name       string          `json:"name"`
	Input      json.RawMessage `json:"input"`
	Expect     json.RawMessage `json:"expect"`
}

// PlacementDecisionExpectation is what a placement test vector checks: the
// chosen targets and replicas (the reason is free text and not compared).
type PlacementDecisionExpectation struct {
	Targets []TargetDecision `json:"targets"`
}
