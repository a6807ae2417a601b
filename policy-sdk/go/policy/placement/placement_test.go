package placement

import (
	"strings"
	"testing"

	"tmc.dev/policy-sdk/go/policy"
)

func TestHandle(t *testing.T) {
	defer Register(nil)
	input := []byte(`{"workload":{"apiVersion":"v1","kind":"ConfigMap","name":"c"},"placement":{"name":"p"},` +
		`"targets":[{"name":"east"},{"name":"west"}]}`)
	if got := string(Handle(input)); !strings.Contains(got, `"error":"tmc_place: no placement function registered`) {
		t.Errorf("unregistered: %s", got)
	}
	Register(func(req policy.PlacementRequest) (policy.PlacementDecision, error) {
		last := req.Targets[len(req.Targets)-1]
		return policy.PlacementDecision{Targets: []policy.TargetDecision{{Name: last.Name}}, Reason: "last"}, nil
	})
	if got, want := string(Handle(input)), `{"ok":{"targets":[{"name":"west"}],"reason":"last"}}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
