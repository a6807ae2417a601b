// Package policytest runs a Go policy natively in `go test`, through the same
// JSON boundary the host uses: requests are encoded, handed to the registered
// entry point as bytes, and the response envelope is decoded.
//
// Policies register their functions from init functions, which also run
// under `go test`, so a test only has to call these helpers.
package policytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"tmc.dev/policy-sdk/go/policy"
	"tmc.dev/policy-sdk/go/policy/placement"
	"tmc.dev/policy-sdk/go/policy/transform"
)

// RunVectorsFile runs the test vectors of a JSON file (an array of
// TestVector), one subtest per vector.
func RunVectorsFile(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read test vectors: %v", err)
	}
	RunVectors(t, raw)
}

// RunVectors runs the test vectors in raw (a JSON array of TestVector), one
// subtest per vector. It fails when raw holds no vector.
func RunVectors(t *testing.T, raw []byte) {
	t.Helper()
	vectors, err := policy.ParseTestVectors(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 {
		t.Fatal("no test vectors: the array is empty")
	}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			if err := CheckVector(v); err != nil {
				t.Error(err)
			}
		})
	}
}

// CheckVector runs one vector against the registered entry point and
// describes the first difference from its expectation.
func CheckVector(v policy.TestVector) error {
	var input []byte
	var want any
	var handle func([]byte) []byte
	switch v.EntryPoint {
	case policy.EntryPlace:
		req, expect, err := v.PlaceCase()
		if err != nil {
			return err
		}
		input, err = json.Marshal(req)
		if err != nil {
			return fmt.Errorf("encode input: %w", err)
		}
		want, handle = expect, placement.Handle
	case policy.EntryTransform:
		req, expect, err := v.TransformCase()
		if err != nil {
			return err
		}
		input, err = json.Marshal(req)
		if err != nil {
			return fmt.Errorf("encode input: %w", err)
		}
		want, handle = expect, transform.Handle
	default:
		return fmt.Errorf("entryPoint %q is not %q or %q", v.EntryPoint, policy.EntryPlace, policy.EntryTransform)
	}
	ok, message, err := policy.DecodeEnvelope(handle(input))
	if err != nil {
		return err
	}
	if message != "" || ok == nil {
		return fmt.Errorf("%s answered an error: %s", v.EntryPoint, message)
	}
	got, err := canonical(v.EntryPoint, ok)
	if err != nil {
		return err
	}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		return fmt.Errorf("encode expectation: %w", err)
	}
	if !bytes.Equal(got, wantJSON) {
		return fmt.Errorf("%s answered\n  %s\nwant\n  %s", v.EntryPoint, got, wantJSON)
	}
	return nil
}

// canonical re-encodes an answer the way its expectation encodes, so that
// the two compare as bytes (a placement's reason is not compared).
func canonical(entry string, answer json.RawMessage) ([]byte, error) {
	var value any
	switch entry {
	case policy.EntryPlace:
		var decision policy.PlacementDecision
		if err := json.Unmarshal(answer, &decision); err != nil {
			return nil, fmt.Errorf("answer %s is not a PlacementDecision: %w", answer, err)
		}
		value = policy.PlacementDecisionExpectation{Targets: decision.Targets}
	default:
		var result policy.TransformResult
		if err := json.Unmarshal(answer, &result); err != nil {
			return nil, fmt.Errorf("answer %s is not a TransformResult: %w", answer, err)
		}
		value = result
	}
	return json.Marshal(value)
}
