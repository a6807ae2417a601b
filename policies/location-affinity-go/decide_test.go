package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"tmc.dev/policy-sdk/go/policy"
	"tmc.dev/policy-sdk/go/policytest"
)

func TestEvenSplit(t *testing.T) {
	cases := []struct {
		n    uint32
		k    int
		want []uint32
	}{
		{10, 5, []uint32{2, 2, 2, 2, 2}},
		{5, 3, []uint32{2, 2, 1}},
		{1, 3, []uint32{1, 0, 0}},
		{0, 2, []uint32{0, 0}},
		{7, 1, []uint32{7}},
		{4294967295, 2, []uint32{2147483648, 2147483647}},
		{3, 0, nil},
	}
	for _, c := range cases {
		if got := evenSplit(c.n, c.k); !slices.Equal(got, c.want) {
			t.Errorf("evenSplit(%d, %d) = %v, want %v", c.n, c.k, got, c.want)
		}
	}
}

func TestRequestedRegions(t *testing.T) {
	cases := []struct {
		annotations policy.StringMap
		want        []string
	}{
		{nil, nil},
		{policy.StringMap{"other": "us"}, nil},
		{policy.StringMap{RegionsAnnotation: ""}, nil},
		{policy.StringMap{RegionsAnnotation: " , ,"}, nil},
		{policy.StringMap{RegionsAnnotation: "eu"}, []string{"eu"}},
		{policy.StringMap{RegionsAnnotation: " us-east-1 ,, us-west-1 "}, []string{"us-east-1", "us-west-1"}},
	}
	for _, c := range cases {
		if got := requestedRegions(c.annotations); !slices.Equal(got, c.want) {
			t.Errorf("%v: got %q, want %q", c.annotations, got, c.want)
		}
	}
}

func request(t *testing.T, settings string, regions string, replicas uint32) policy.PlacementRequest {
	t.Helper()
	target := func(name, region string) policy.Target {
		return policy.Target{Name: name, Labels: policy.StringMap{"topology.kubernetes.io/region": region},
			Location: policy.Location{Region: region}, Ready: true, Schedulable: true}
	}
	req := policy.PlacementRequest{
		Workload: policy.Workload{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", Replicas: &replicas,
			Annotations: policy.StringMap{RegionsAnnotation: regions}},
		Placement: policy.Placement{Name: "web"},
		Targets:   []policy.Target{target("east", "us-east-1"), target("west", "us-west-1"), target("west2", "us-west-1")},
	}
	if settings != "" {
		req.Settings = json.RawMessage(settings)
	}
	return req
}

func TestReasons(t *testing.T) {
	cases := []struct {
		settings, regions, want string
	}{
		{``, "us-west-1", "2 of 3 ready targets match region in [us-west-1] (required)"},
		{``, "mars-1", "0 of 3 ready targets match region in [mars-1] (required); placing nowhere"},
		{`{"mode":"preferred"}`, "mars-1", "0 of 3 ready targets match region in [mars-1] (preferred); none match, falling back to all 3"},
		{`{"maxTargets":1}`, "", "3 of 3 ready targets match no constraint (required); keeping the first 1 by preference"},
	}
	for _, c := range cases {
		decision := policytest.Place(t, request(t, c.settings, c.regions, 3))
		if decision.Reason != c.want {
			t.Errorf("settings %s, regions %q: reason %q, want %q", c.settings, c.regions, decision.Reason, c.want)
		}
	}
}

func TestPlaceRefusesMalformedSettings(t *testing.T) {
	msg := policytest.PlaceError(t, request(t, `{"mode":"sometimes"}`, "", 3))
	if !strings.Contains(msg, "tmc_place: invalid settings: mode must be") {
		t.Errorf("error %q does not name the bad setting", msg)
	}
}

// Every replica is placed exactly once, whatever the count and the targets.
func TestReplicasAddUp(t *testing.T) {
	for replicas := uint32(0); replicas < 20; replicas++ {
		for _, regions := range []string{"", "us-west-1", "us-east-1"} {
			decision := policytest.Place(t, request(t, "", regions, replicas))
			var sum uint32
			for _, target := range decision.Targets {
				if target.Replicas == nil {
					t.Fatalf("target %s has no replicas", target.Name)
				}
				sum += *target.Replicas
			}
			if sum != replicas {
				t.Errorf("%d replicas over regions %q placed %d", replicas, regions, sum)
			}
		}
	}
}
