package policy

import (
	"encoding/json"
	"fmt"
)

var testVectors []byte

// RegisterTestVectors makes tmc_test_vectors answer with raw, a JSON array of
// TestVector (typically a file embedded with go:embed). Call it from an init
// function. Without it the module ships no vectors.
func RegisterTestVectors(raw []byte) {
	testVectors = raw
}

// HandleTestVectors answers tmc_test_vectors: {"ok": [vectors]}, or an error
// naming the first malformed vector.
func HandleTestVectors() []byte {
	if testVectors == nil {
		return OkEnvelope("tmc_test_vectors", []TestVector{})
	}
	vectors, err := ParseTestVectors(testVectors)
	if err != nil {
		return ErrorEnvelope("tmc_test_vectors: " + err.Error())
	}
	return OkEnvelope("tmc_test_vectors", vectors)
}

// ParseTestVectors decodes a JSON array of TestVector and checks that each
// vector's input and expectation decode for its entry point.
func ParseTestVectors(raw []byte) ([]TestVector, error) {
	var vectors []TestVector
	if err := json.Unmarshal(raw, &vectors); err != nil {
		return nil, fmt.Errorf("test vectors are not a JSON array of TestVector: %w", err)
	}
	for i, v := range vectors {
		var err error
		switch v.EntryPoint {
		case EntryPlace:
			_, _, err = v.PlaceCase()
		case EntryTransform:
			_, _, err = v.TransformCase()
		default:
			err = fmt.Errorf("entryPoint %q is not %q or %q", v.EntryPoint, EntryPlace, EntryTransform)
		}
		if err != nil {
			return nil, fmt.Errorf("test vector %d (%q): %w", i, v.Name, err)
		}
	}
	if vectors == nil {
		vectors = []TestVector{}
	}
	return vectors, nil
}

// PlaceCase decodes a place vector's input and expectation.
func (v TestVector) PlaceCase() (PlacementRequest, PlacementDecisionExpectation, error) {
	var req PlacementRequest
	var want PlacementDecisionExpectation
	if v.EntryPoint != EntryPlace {
		return req, want, fmt.Errorf("entryPoint is %q, not %q", v.EntryPoint, EntryPlace)
	}
	if err := json.Unmarshal(v.Input, &req); err != nil {
		return req, want, fmt.Errorf("input is not a PlacementRequest: %w", err)
	}
	if err := json.Unmarshal(v.Expect, &want); err != nil {
		return req, want, fmt.Errorf("expect is not a PlacementDecisionExpectation: %w", err)
	}
	return req, want, nil
}

// TransformCase decodes a transform vector's input and expectation.
func (v TestVector) TransformCase() (TransformRequest, TransformResult, error) {
	var req TransformRequest
	var want TransformResult
	if v.EntryPoint != EntryTransform {
		return req, want, fmt.Errorf("entryPoint is %q, not %q", v.EntryPoint, EntryTransform)
	}
	if err := json.Unmarshal(v.Input, &req); err != nil {
		return req, want, fmt.Errorf("input is not a TransformRequest: %w", err)
	}
	if err := json.Unmarshal(v.Expect, &want); err != nil {
		return req, want, fmt.Errorf("expect is not a TransformResult: %w", err)
	}
	return req, want, nil
}
