package main

import (
	"encoding/json"
	"fmt"
	"testing"

	"tmc.dev/policy-sdk/go/policy"
	"tmc.dev/policy-sdk/go/policy/placement"
)

// benchRequest is the request of the policy_engine bench
// (policy-host/benches/policy_engine.rs, typical_request): a Deployment with
// the usual metadata over 10 targets in 4 regions.
func benchRequest(tb testing.TB) []byte {
	tb.Helper()
	regions := []string{"us-west-1", "us-east-1", "eu-central-1", "ap-south-1"}
	var targets []policy.Target
	for i := range 10 {
		region := regions[i%len(regions)]
		zone := region + []string{"a", "b", "c"}[i%3]
		env, provider := "prod", "gcp"
		if i%5 == 0 {
			env = "staging"
		}
		if i%2 == 0 {
			provider = "aws"
		}
		capacity := uint32(20 + i)
		targets = append(targets, policy.Target{
			Name: fmt.Sprintf("cluster-%02d", i),
			Labels: policy.StringMap{"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone,
				"env": env, "provider": provider},
			Location: policy.Location{Region: region, Zone: zone},
			Ready:    i != 7, Schedulable: true, Capacity: &capacity,
		})
	}
	replicas := uint32(12)
	req := policy.PlacementRequest{
		Workload: policy.Workload{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "shop", Name: "checkout",
			Labels: policy.StringMap{"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop",
				"app.kubernetes.io/version": "1.42.0"},
			Annotations: policy.StringMap{RegionsAnnotation: "us-west-1, us-east-1, eu-central-1",
				"deployment.kubernetes.io/revision": "7"},
			Replicas: &replicas},
		Placement: policy.Placement{Name: "checkout",
			LocationSelectors:   []policy.LabelSelector{{MatchLabels: policy.StringMap{"env": "prod"}}},
			LocationPreferences: []policy.LabelSelector{{MatchLabels: policy.StringMap{"provider": "aws"}}}},
		Settings: json.RawMessage(`{"maxTargets":5,"mode":"preferred"}`),
		Targets:  targets,
	}
	input, err := json.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return input
}

// BenchmarkPlace is one tmc_place call natively: decode, decide, encode.
func BenchmarkPlace(b *testing.B) {
	input := benchRequest(b)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		placement.Handle(input)
	}
}

// BenchmarkDecode is the request's decoding alone.
func BenchmarkDecode(b *testing.B) {
	input := benchRequest(b)
	b.ReportAllocs()
	for b.Loop() {
		var req policy.PlacementRequest
		if err := req.UnmarshalJSON(input); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecide is the decision alone, settings parsing included.
func BenchmarkDecide(b *testing.B) {
	var req policy.PlacementRequest
	if err := req.UnmarshalJSON(benchRequest(b)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := place(req); err != nil {
			b.Fatal(err)
		}
	}
}
