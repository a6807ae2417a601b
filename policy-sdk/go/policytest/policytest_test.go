package policytest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"tmc.dev/policy-sdk/go/policy"
	"tmc.dev/policy-sdk/go/policy/placement"
	"tmc.dev/policy-sdk/go/policy/transform"
)

// The policy under test: place on every ready target (or fail when asked to
// place on none), and stamp the target's name as a label.
func init() {
	placement.Register(func(req policy.PlacementRequest) (policy.PlacementDecision, error) {
		var d policy.PlacementDecision
		for _, target := range req.Targets {
			if target.Ready {
				d.Targets = append(d.Targets, policy.TargetDecision{Name: target.Name})
			}
		}
		if len(req.Targets) == 0 {
			return d, errors.New("no targets given")
		}
		return d, nil
	})
	transform.Register(func(req policy.TransformRequest) (policy.TransformResult, error) {
		return policy.TransformResult{Labels: policy.MapEdits{Set: policy.StringMap{"target": req.Target.Name}}}, nil
	})
	policy.RegisterSettings(func(req policy.SettingsRequest) (policy.SettingsVerdict, error) {
		return policy.SettingsVerdict{Valid: string(req.Settings) == `"ok"`, Message: string(req.Settings)}, nil
	})
}

const input = `{"workload":{"apiVersion":"v1","kind":"ConfigMap","name":"c"},"placement":{"name":"p"},` +
	`"targets":[{"name":"east","ready":true},{"name":"west"}]}`

func vector(entry, input, expect string) policy.TestVector {
	return policy.TestVector{EntryPoint: entry, Name: "v", Input: json.RawMessage(input), Expect: json.RawMessage(expect)}
}

func TestCheckVectorPasses(t *testing.T) {
	for _, v := range []policy.TestVector{
		vector("place", input, `{"targets":[{"name":"east"}]}`),
		vector("transform", `{"workload":{"name":"c"},"target":{"name":"west"}}`, `{"labels":{"set":{"target":"west"}}}`),
	} {
		if err := CheckVector(v); err != nil {
			t.Errorf("%s: %v", v.EntryPoint, err)
		}
	}
}

func TestCheckVectorReportsDifferences(t *testing.T) {
	cases := []struct {
		vector policy.TestVector
		want   string
	}{
		{vector("place", input, `{"targets":[{"name":"west"}]}`), `place answered`},
		{vector("place", input, `{"targets":[{"name":"east","replicas":1}]}`), `place answered`},
		{vector("place", input, `{"targets":[]}`), `place answered`},
		{vector("place", strings.Replace(input, `"targets":[{"name":"east","ready":true},{"name":"west"}]`, `"targets":[]`, 1), `{"targets":[]}`), `place answered an error: tmc_place: no targets given`},
		{vector("transform", `{"workload":{"name":"c"},"target":{"name":"west"}}`, `{}`), `transform answered`},
		{vector("mutate", `{}`, `{}`), `entryPoint "mutate"`},
	}
	for i, c := range cases {
		err := CheckVector(c.vector)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: error %v, want one containing %q", i, err, c.want)
		}
	}
}

func TestCallHelpers(t *testing.T) {
	var req policy.PlacementRequest
	if err := json.Unmarshal([]byte(input), &req); err != nil {
		t.Fatal(err)
	}
	if d := Place(t, req); len(d.Targets) != 1 || d.Targets[0].Name != "east" {
		t.Errorf("Place: %+v", d)
	}
	req.Targets = nil
	if msg := PlaceError(t, req); msg != "tmc_place: no targets given" {
		t.Errorf("PlaceError: %q", msg)
	}
	if r := Transform(t, policy.TransformRequest{Target: policy.Target{Name: "x"}}); r.Labels.Set["target"] != "x" {
		t.Errorf("Transform: %+v", r)
	}
	if v := ValidateSettings(t, `"ok"`); !v.Valid {
		t.Errorf("ValidateSettings: %+v", v)
	}
	if v := ValidateSettings(t, ``); v.Valid || v.Message != "null" {
		t.Errorf("absent settings must arrive as null: %+v", v)
	}
}
