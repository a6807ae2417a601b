package policytest

import (
	"encoding/json"
	"testing"

	"tmc.dev/policy-sdk/go/policy"
	"tmc.dev/policy-sdk/go/policy/placement"
	"tmc.dev/policy-sdk/go/policy/transform"
)

// Place runs the registered placement function on req through the JSON
// boundary and returns its decision; the test fails on an error answer.
func Place(t testing.TB, req policy.PlacementRequest) policy.PlacementDecision {
	t.Helper()
	var decision policy.PlacementDecision
	mustSucceed(t, call(t, req, placement.Handle), &decision)
	return decision
}

// PlaceError runs the registered placement function on req and returns the
// error message it answers; the test fails if it answers a decision.
func PlaceError(t testing.TB, req policy.PlacementRequest) string {
	t.Helper()
	return mustFail(t, call(t, req, placement.Handle))
}

// Transform runs the registered transformation function on req through the
// JSON boundary and returns its result; the test fails on an error answer.
func Transform(t testing.TB, req policy.TransformRequest) policy.TransformResult {
	t.Helper()
	var result policy.TransformResult
	mustSucceed(t, call(t, req, transform.Handle), &result)
	return result
}

// ValidateSettings runs the registered settings validator on settings, a
// JSON text ("" for absent settings), and returns its verdict.
func ValidateSettings(t testing.TB, settings string) policy.SettingsVerdict {
	t.Helper()
	req := policy.SettingsRequest{}
	if settings != "" {
		req.Settings = json.RawMessage(settings)
	}
	var verdict policy.SettingsVerdict
	mustSucceed(t, call(t, req, policy.HandleValidateSettings), &verdict)
	return verdict
}

func call(t testing.TB, req any, handle func([]byte) []byte) []byte {
	t.Helper()
	input, err := json.Marshal(req)
	if err != nil {
		t.Fatalf("encode request: %v", err)
	}
	return handle(input)
}

func mustSucceed(t testing.TB, answer []byte, into any) {
	t.Helper()
	ok, message, err := policy.DecodeEnvelope(answer)
	if err != nil {
		t.Fatal(err)
	}
	if ok == nil {
		t.Fatalf("policy answered an error: %s", message)
	}
	if err := json.Unmarshal(ok, into); err != nil {
		t.Fatalf("answer %s does not decode as %T: %v", ok, into, err)
	}
}

func mustFail(t testing.TB, answer []byte) string {
	t.Helper()
	ok, message, err := policy.DecodeEnvelope(answer)
	if err != nil {
		t.Fatal(err)
	}
	if ok != nil {
		t.Fatalf("policy answered %s, want an error", ok)
	}
	return message
}
