package transform

import (
	"strings"
	"testing"

	"tmc.dev/policy-sdk/go/policy"
)

func TestHandle(t *testing.T) {
	defer Register(nil)
	input := []byte(`{"workload":{"apiVersion":"v1","kind":"ConfigMap","name":"c"},"target":{"name":"west"}}`)
	if got := string(Handle(input)); !strings.Contains(got, `"error":"tmc_transform: no transformation function registered`) {
		t.Errorf("unregistered: %s", got)
	}
	Register(func(req policy.TransformRequest) (policy.TransformResult, error) {
		return policy.TransformResult{Labels: policy.MapEdits{Set: policy.StringMap{"target": req.Target.Name}}}, nil
	})
	if got, want := string(Handle(input)), `{"ok":{"labels":{"set":{"target":"west"}}}}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
