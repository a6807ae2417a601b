package policy

import (
	"encoding/json"
	"testing"
)

func u32(v uint32) *uint32 { return &v }

// Rust serializes fields in declaration order, as Go does, so a document the
// Rust types produce must survive a Go decode/encode round trip byte for byte.
func TestRoundTripMatchesRustEncoding(t *testing.T) {
	cases := map[string]struct {
		doc  string
		into func() any
	}{
		"placement request": {
			doc: `{"workload":{"apiVersion":"apps/v1","kind":"Deployment","namespace":"default","name":"web",` +
				`"labels":{"app":"web"},"annotations":{"tmc.kcp.io/regions":"eu"},"replicas":3},` +
				`"placement":{"name":"p","locationSelectors":[{"matchLabels":{"tier":"gold"},` +
				`"matchExpressions":[{"key":"env","operator":"In","values":["prod"]},{"key":"gpu","operator":"Exists"}]}],` +
				`"locationPreferences":[{"matchLabels":{"zone":"a"}}]},"settings":{"mode":"preferred"},` +
				`"targets":[{"name":"east","labels":{},"location":{"region":"us","zone":"us-1"},"ready":true,` +
				`"schedulable":false,"capacity":4,"current":{"replicas":2}},` +
				`{"name":"west","labels":{"a":"b"},"location":{},"ready":false,"schedulable":true,"current":{}}]}`,
			into: func() any { return &PlacementRequest{} },
		},
		"minimal placement request": {
			doc: `{"workload":{"apiVersion":"v1","kind":"ConfigMap","namespace":"","name":"c","labels":{},"annotations":{}},` +
				`"placement":{"name":"p"},"settings":null,"targets":[]}`,
			into: func() any { return &PlacementRequest{} },
		},
		"decision": {
			doc:  `{"targets":[{"name":"east","replicas":0},{"name":"west"}],"reason":"why"}`,
			into: func() any { return &PlacementDecision{} },
		},
		"transform request": {
			doc: `{"workload":{"apiVersion":"v1","kind":"Service","namespace":"ns","name":"s","labels":{},"annotations":{}},` +
				`"target":{"name":"west","labels":{},"location":{"region":"eu"},"ready":true,"schedulable":true},` +
				`"replicas":2,"settings":[1,2]}`,
			into: func() any { return &TransformRequest{} },
		},
		"transform result": {
			doc:  `{"labels":{"set":{"a":"1","b":"2"},"remove":["c"]},"annotations":{"remove":["d"]}}`,
			into: func() any { return &TransformResult{} },
		},
		"verdict": {
			doc:  `{"valid":false,"message":"bad"}`,
			into: func() any { return &SettingsVerdict{} },
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			value := c.into()
			if err := json.Unmarshal([]byte(c.doc), value); err != nil {
				t.Fatalf("decode: %v", err)
			}
			out, err := json.Marshal(value)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if string(out) != c.doc {
				t.Errorf("round trip changed the document\n got %s\nwant %s", out, c.doc)
			}
		})
	}
}

// Zero values must encode the way the Rust side expects them: maps as {},
// required lists as [], skipped fields absent.
func TestZeroValuesEncodeLikeRust(t *testing.T) {
	cases := []struct {
		value any
		want  string
	}{
		{Workload{}, `{"apiVersion":"","kind":"","namespace":"","name":"","labels":{},"annotations":{}}`},
		{Target{}, `{"name":"","labels":{},"location":{},"ready":false,"schedulable":false}`},
		{LabelSelector{}, `{}`},
		{Placement{}, `{"name":""}`},
		{PlacementRequest{}, `{"workload":{"apiVersion":"","kind":"","namespace":"","name":"","labels":{},"annotations":{}},"placement":{"name":""},"settings":null,"targets":[]}`},
		{PlacementDecision{}, `{"targets":[],"reason":""}`},
		{PlacementDecisionExpectation{}, `{"targets":[]}`},
		{TargetDecision{Name: "a", Replicas: u32(0)}, `{"name":"a","replicas":0}`},
		{TransformResult{}, `{}`},
		{TransformResult{Annotations: MapEdits{Set: StringMap{"k": "v"}}}, `{"annotations":{"set":{"k":"v"}}}`},
		{SettingsRequest{}, `{"settings":null}`},
		{SettingsVerdict{Valid: true}, `{"valid":true}`},
	}
	for _, c := range cases {
		out, err := json.Marshal(c.value)
		if err != nil {
			t.Fatalf("encode %T: %v", c.value, err)
		}
		if string(out) != c.want {
			t.Errorf("%T encodes as\n %s\nwant\n %s", c.value, out, c.want)
		}
	}
}

func TestMapEditsApplyTo(t *testing.T) {
	edits := MapEdits{Set: StringMap{"a": "1", "b": "2"}, Remove: []string{"b", "c"}}
	got := edits.ApplyTo(StringMap{"c": "3", "d": "4"})
	want := StringMap{"a": "1", "d": "4"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	if m := (MapEdits{Remove: []string{"x"}}).ApplyTo(nil); m != nil {
		t.Errorf("removing from nil gave %v, want nil", m)
	}
	if !(MapEdits{}).IsEmpty() || edits.IsEmpty() {
		t.Error("IsEmpty is wrong")
	}
}
