package policy

import (
	"strings"
	"testing"
)

func TestParseTestVectors(t *testing.T) {
	good := `[{"entryPoint":"place","name":"p","input":{"workload":{"apiVersion":"v1","kind":"ConfigMap","name":"c"},` +
		`"placement":{"name":"p"},"targets":[]},"expect":{"targets":[]}},` +
		`{"entryPoint":"transform","name":"t","input":{"workload":{"apiVersion":"v1","kind":"ConfigMap","name":"c"},` +
		`"target":{"name":"west"}},"expect":{"labels":{"set":{"a":"b"}}}}]`
	vectors, err := ParseTestVectors([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(vectors) != 2 {
		t.Fatalf("got %d vectors, want 2", len(vectors))
	}
	req, _, err := vectors[1].TransformCase()
	if err != nil || req.Target.Name != "west" {
		t.Errorf("transform case: %+v %v", req, err)
	}
	if _, _, err := vectors[1].PlaceCase(); err == nil {
		t.Error("a transform vector decoded as a place case")
	}

	bad := map[string]string{
		`{}`:                                   "not a JSON array",
		`[{"entryPoint":"mutate","name":"m"}]`: `entryPoint "mutate"`,
		`[{"entryPoint":"place","name":"p","input":{"targets":3}}]`: `test vector 0 ("p"): input is not a PlacementRequest`,
	}
	for doc, want := range bad {
		if _, err := ParseTestVectors([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", doc, err, want)
		}
	}
}

func TestHandleTestVectors(t *testing.T) {
	defer RegisterTestVectors(nil)
	if got := string(HandleTestVectors()); got != `{"ok":[]}` {
		t.Errorf("without vectors: %s", got)
	}
	RegisterTestVectors([]byte(` [ {"entryPoint":"place", "name":"p", "input":{"workload":{},"placement":{},"targets":[]},` +
		` "expect":{"targets":[]}} ] `))
	want := `{"ok":[{"entryPoint":"place","name":"p","input":{"workload":{},"placement":{},"targets":[]},"expect":{"targets":[]}}]}`
	if got := string(HandleTestVectors()); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	RegisterTestVectors([]byte(`[{"entryPoint":"x"}]`))
	if got := string(HandleTestVectors()); !strings.HasPrefix(got, `{"error":"tmc_test_vectors: test vector 0`) {
		t.Errorf("malformed vectors: %s", got)
	}
}
