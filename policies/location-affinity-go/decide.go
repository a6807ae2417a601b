package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"tmc.dev/policy-sdk/go/policy"
)

// RegionsAnnotation restricts a workload to a comma-separated list of regions.
const RegionsAnnotation = "tmc.kcp.io/regions"

// decide is the whole decision, pure and deterministic.
func decide(req policy.PlacementRequest, settings Settings) policy.PlacementDecision {
	regions := requestedRegions(req.Workload.Annotations)
	var candidates, matching []policy.Target
	for _, t := range req.Targets {
		if !t.Ready || !t.Schedulable {
			continue
		}
		candidates = append(candidates, t)
		if policy.MatchesAny(req.Placement.LocationSelectors, t.Labels) &&
			(regions == nil || slices.Contains(regions, t.Location.Region)) {
			matching = append(matching, t)
		}
	}
	reason := fmt.Sprintf("%d of %d ready targets match %s (%s)",
		len(matching), len(candidates), describeCriteria(req, regions), settings.Mode)
	chosen := matching
	if settings.Mode == ModePreferred && len(matching) == 0 && len(candidates) > 0 {
		reason += fmt.Sprintf("; none match, falling back to all %d", len(candidates))
		chosen = candidates
	}
	if len(chosen) == 0 {
		return policy.PlacementDecision{Targets: []policy.TargetDecision{}, Reason: reason + "; placing nowhere"}
	}
	chosen = byPreference(chosen, req.Placement.LocationPreferences)
	if settings.MaxTargets != nil && uint64(len(chosen)) > uint64(*settings.MaxTargets) {
		reason += fmt.Sprintf("; keeping the first %d by preference", *settings.MaxTargets)
		chosen = chosen[:*settings.MaxTargets]
	}
	var shares []uint32
	if req.Workload.Replicas != nil {
		shares = evenSplit(*req.Workload.Replicas, len(chosen))
	}
	targets := make([]policy.TargetDecision, len(chosen))
	for i, t := range chosen {
		targets[i].Name = t.Name
		if shares != nil {
			targets[i].Replicas = &shares[i]
		}
	}
	return policy.PlacementDecision{Targets: targets, Reason: reason}
}

// requestedRegions parses the regions annotation: comma-separated, trimmed,
// empty items dropped. Nil when the annotation is absent or lists no region.
func requestedRegions(annotations policy.StringMap) []string {
	raw, ok := annotations[RegionsAnnotation]
	if !ok {
		return nil
	}
	var regions []string
	for item := range strings.SplitSeq(raw, ",") {
		if region := strings.TrimSpace(item); region != "" {
			regions = append(regions, region)
		}
	}
	return regions
}

// byPreference orders targets by the index of the first preference they
// match (none: after all preferences), then by name.
func byPreference(targets []policy.Target, preferences []policy.LabelSelector) []policy.Target {
	type ranked struct {
		rank   int
		target policy.Target
	}
	list := make([]ranked, len(targets))
	for i, t := range targets {
		rank := slices.IndexFunc(preferences, func(p policy.LabelSelector) bool { return p.Matches(t.Labels) })
		if rank < 0 {
			rank = len(preferences)
		}
		list[i] = ranked{rank, t}
	}
	slices.SortStableFunc(list, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), strings.Compare(a.target.Name, b.target.Name))
	})
	out := make([]policy.Target, len(list))
	for i, r := range list {
		out[i] = r.target
	}
	return out
}

// evenSplit splits n replicas over k targets: n/k each, the first n%k get one
// more. k == 0 yields nil.
func evenSplit(n uint32, k int) []uint32 {
	if k <= 0 {
		return nil
	}
	base, extra := n/uint32(k), n%uint32(k)
	shares := make([]uint32, k)
	for i := range shares {
		shares[i] = base
		if uint32(i) < extra {
			shares[i]++
		}
	}
	return shares
}

func describeCriteria(req policy.PlacementRequest, regions []string) string {
	var parts []string
	if len(req.Placement.LocationSelectors) > 0 {
		parts = append(parts, "locationSelectors")
	}
	if regions != nil {
		parts = append(parts, fmt.Sprintf("region in [%s]", strings.Join(regions, ", ")))
	}
	if len(parts) == 0 {
		return "no constraint"
	}
	return strings.Join(parts, " and ")
}
