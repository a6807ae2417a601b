package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// Mirrors of the input types without methods: encoding/json decodes them by
// reflection, the reference the reader must agree with.
type (
	refWorkload struct {
		APIVersion  string    `json:"apiVersion"`
		Kind        string    `json:"kind"`
		Namespace   string    `json:"namespace"`
		Name        string    `json:"name"`
		Labels      StringMap `json:"labels"`
		Annotations StringMap `json:"annotations"`
		Replicas    *uint32   `json:"replicas,omitempty"`
	}
	refTarget struct {
		Name        string      `json:"name"`
		Labels      StringMap   `json:"labels"`
		Location    Location    `json:"location"`
		Ready       bool        `json:"ready"`
		Schedulable bool        `json:"schedulable"`
		Capacity    *uint32     `json:"capacity,omitempty"`
		Current     *Assignment `json:"current,omitempty"`
	}
	refRequirement struct {
		Key      string   `json:"key"`
		Operator string   `json:"operator"`
		Values   []string `json:"values,omitempty"`
	}
	refSelector struct {
		MatchLabels      StringMap        `json:"matchLabels,omitempty"`
		MatchExpressions []refRequirement `json:"matchExpressions,omitempty"`
	}
	refPlacement struct {
		Name                string        `json:"name"`
		LocationSelectors   []refSelector `json:"locationSelectors,omitempty"`
		LocationPreferences []refSelector `json:"locationPreferences,omitempty"`
	}
	refPlacementRequest struct {
		Workload  refWorkload     `json:"workload"`
		Placement refPlacement    `json:"placement"`
		Settings  json.RawMessage `json:"settings"`
		Targets   []refTarget     `json:"targets"`
	}
)

func (w refWorkload) real() Workload { return Workload(w) }
func (t refTarget) real() Target     { return Target(t) }

func (s refSelector) real() LabelSelector {
	return LabelSelector{MatchLabels: s.MatchLabels, MatchExpressions: convert(s.MatchExpressions,
		func(q refRequirement) LabelSelectorRequirement { return LabelSelectorRequirement(q) })}
}

func (p refPlacementRequest) real() PlacementRequest {
	return PlacementRequest{
		Workload: p.Workload.real(),
		Placement: Placement{Name: p.Placement.Name,
			LocationSelectors:   convert(p.Placement.LocationSelectors, refSelector.real),
			LocationPreferences: convert(p.Placement.LocationPreferences, refSelector.real)},
		Settings: p.Settings,
		Targets:  convert(p.Targets, refTarget.real),
	}
}

func convert[A, B any](list []A, f func(A) B) []B {
	if list == nil {
		return nil
	}
	out := make([]B, 0, len(list))
	for _, a := range list {
		out = append(out, f(a))
	}
	return out
}

var documentCases = []string{
	`{"workload":{"apiVersion":"apps/v1","kind":"Deployment","namespace":"shop","name":"web","labels":{"app":"web"},` +
		`"annotations":{"tmc.kcp.io/regions":" us-west-1 "},"replicas":5},"placement":{"name":"web",` +
		`"locationSelectors":[{"matchLabels":{"env":"prod"},"matchExpressions":[{"key":"tier","operator":"In","values":["gold","silver"]},` +
		`{"key":"gpu","operator":"Exists"}]}],"locationPreferences":[{}]},"settings":{"mode":"preferred","maxTargets":2},` +
		`"targets":[{"name":"a","labels":{"x":"y"},"location":{"region":"eu","zone":"eu-1"},"ready":true,"schedulable":true,` +
		`"capacity":3,"current":{"replicas":1}},{"name":"b","labels":{},"location":{},"ready":false,"schedulable":false,"current":{}}]}`,
	`{}`, `null`, `{"targets":[]}`, `{"targets":null,"settings":null}`, `{"workload":null,"placement":null}`,
	`{"workload":{"labels":null,"annotations":{"a":null},"replicas":null},"targets":[{"current":null,"capacity":null}]}`,
	`{"future":{"nested":[1,{"x":true}]},"workload":{"name":"n","extra":"ignored"},"targets":[{"name":"t","new":[]}]}`,
	`{"workload":{"name":"first"},"workload":{"kind":"merged"}}`,
	`{"placement":{"locationSelectors":[{"matchExpressions":[{"key":"k","operator":"In","values":[null,"v"]}]}]}}`,
	`{"workload":{"name":"esc\u00e9\"\\\/\n"}}`, ` { "workload" : { "name" : "spaces" } } `,
	`{"workload":{"replicas":-1}}`, `{"workload":{"replicas":1.5}}`, `{"workload":{"replicas":"3"}}`,
	`{"workload":{"replicas":4294967296}}`, `{"targets":[{"ready":"yes"}]}`, `{"targets":{}}`, `{"workload":[]}`,
	`{"workload":{"labels":{"a":1}}}`, `{"settings":}`, `{"workload":{}} x`, `[]`, `"x"`, `{"targets":[1]}`,
}

func checkDocument(t *testing.T, doc string) {
	t.Helper()
	var ref refPlacementRequest
	refErr := json.Unmarshal([]byte(doc), &ref)
	var got PlacementRequest
	err := got.UnmarshalJSON([]byte(doc))
	if tooDeep(err) {
		return
	}
	if (err == nil) != (refErr == nil) {
		t.Fatalf("%.200s:\n reader error: %v\n encoding/json error: %v", doc, err, refErr)
	}
	if err != nil {
		return
	}
	if want := ref.real(); !reflect.DeepEqual(got, want) {
		t.Errorf("%.200s:\n reader decoded %+v\n encoding/json %+v", doc, got, want)
	}
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, doc := range documentCases {
		checkDocument(t, doc)
	}
}

// Member names match exactly, unlike encoding/json, which also takes "Name".
func TestDecodeMemberNamesAreExact(t *testing.T) {
	var got PlacementRequest
	if err := got.UnmarshalJSON([]byte(`{"workload":{"Name":"x","name":"y"}}`)); err != nil {
		t.Fatal(err)
	}
	if got.Workload.Name != "y" {
		t.Errorf("name %q, want y", got.Workload.Name)
	}
}

func TestDecodeErrorsNameThePath(t *testing.T) {
	var got PlacementRequest
	err := got.UnmarshalJSON([]byte(`{"targets":[{"name":"a","ready":"yes"}]}`))
	if err == nil || !strings.Contains(err.Error(), "invalid JSON at byte 32: PlacementRequest.targets[0].ready: must be a boolean, got a string") {
		t.Errorf("error %v", err)
	}
}

func TestOtherInputTypesDecode(t *testing.T) {
	var tr TransformRequest
	if err := json.Unmarshal([]byte(`{"workload":{"name":"w"},"target":{"name":"t","location":{"zone":"z"}},"replicas":2,"settings":[1]}`), &tr); err != nil {
		t.Fatal(err)
	}
	if tr.Workload.Name != "w" || tr.Target.Location.Zone != "z" || tr.Replicas == nil || *tr.Replicas != 2 || string(tr.Settings) != "[1]" {
		t.Errorf("TransformRequest %+v", tr)
	}
	var sel LabelSelector
	if err := json.Unmarshal([]byte(`{"matchExpressions":[{"key":"k","operator":"Exists"}]}`), &sel); err != nil || len(sel.MatchExpressions) != 1 {
		t.Errorf("LabelSelector %+v %v", sel, err)
	}
	var p Placement
	if err := json.Unmarshal([]byte(`{"name":3}`), &p); err == nil {
		t.Error("a numeric placement name was accepted")
	}
}

// knownMembers are the member names of the input types; encoding/json also
// matches them case-insensitively, the reader does not, so fuzzed documents
// with such case variants are not compared.
var knownMembers = []string{"workload", "placement", "settings", "targets", "apiVersion", "kind", "namespace", "name",
	"labels", "annotations", "replicas", "location", "region", "zone", "ready", "schedulable", "capacity", "current",
	"matchLabels", "matchExpressions", "key", "operator", "values", "locationSelectors", "locationPreferences"}

func hasCaseVariant(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for key, value := range v {
			for _, known := range knownMembers {
				if key != known && strings.EqualFold(key, known) {
					return true
				}
			}
			if hasCaseVariant(value) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasCaseVariant(e) {
				return true
			}
		}
	}
	return false
}

func FuzzDecodePlacementRequest(f *testing.F) {
	for _, doc := range documentCases {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var generic any
		if json.Unmarshal([]byte(doc), &generic) == nil && hasCaseVariant(generic) {
			return
		}
		checkDocument(t, doc)
	})
}
