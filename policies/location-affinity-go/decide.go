package main

import (
	"slices"
	"strconv"
	"strings"

	"tmc.dev/policy-sdk/go/policy"
)

// RegionsAnnotation restricts a workload to a comma-separated list of regions.
const RegionsAnnotation = "tmc.kcp.io/regions"

// decide is the whole decision, pure and deterministic.
//
// It runs in a fresh instance for every evaluation, where every allocation
// and every instruction counts (docs/benchmarks.md): targets are handled by
// index, and the reason is appended to one buffer (strconv, no fmt).
func decide(req policy.PlacementRequest, settings Settings) policy.PlacementDecision {
	regions := requestedRegions(req.Workload.Annotations)
	selectors := policy.Matchers(req.Placement.LocationSelectors)
	candidates := make([]int, 0, len(req.Targets))
	matching := make([]int, 0, len(req.Targets))
	for i := range req.Targets {
		t := &req.Targets[i]
		if !t.Ready || !t.Schedulable {
			continue
		}
		candidates = append(candidates, i)
		if policy.MatchesAnyOf(selectors, t.Labels) &&
			(regions == nil || slices.Contains(regions, t.Location.Region)) {
			matching = append(matching, i)
		}
	}
	reason := make([]byte, 0, 256)
	reason = strconv.AppendInt(reason, int64(len(matching)), 10)
	reason = append(reason, " of "...)
	reason = strconv.AppendInt(reason, int64(len(candidates)), 10)
	reason = append(reason, " ready targets match "...)
	reason = appendCriteria(reason, req, regions)
	reason = append(reason, " ("...)
	reason = append(reason, settings.Mode...)
	reason = append(reason, ')')
	chosen := matching
	if settings.Mode == ModePreferred && len(matching) == 0 && len(candidates) > 0 {
		reason = append(reason, "; none match, falling back to all "...)
		reason = strconv.AppendInt(reason, int64(len(candidates)), 10)
		chosen = candidates
	}
	if len(chosen) == 0 {
		reason = append(reason, "; placing nowhere"...)
		return policy.PlacementDecision{Targets: []policy.TargetDecision{}, Reason: string(reason)}
	}
	byPreference(req.Targets, chosen, req.Placement.LocationPreferences)
	if settings.MaxTargets != nil && uint64(len(chosen)) > uint64(*settings.MaxTargets) {
		reason = append(reason, "; keeping the first "...)
		reason = strconv.AppendUint(reason, uint64(*settings.MaxTargets), 10)
		reason = append(reason, " by preference"...)
		chosen = chosen[:*settings.MaxTargets]
	}
	var shares []uint32
	if req.Workload.Replicas != nil {
		shares = evenSplit(*req.Workload.Replicas, len(chosen))
	}
	targets := make([]policy.TargetDecision, len(chosen))
	for i, t := range chosen {
		targets[i].Name = req.Targets[t].Name
		if shares != nil {
			targets[i].Replicas = &shares[i]
		}
	}
	return policy.PlacementDecision{Targets: targets, Reason: string(reason)}
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

// byPreference orders the targets indexed by chosen by the index of the
// first preference they match (none: after all preferences), then by name.
func byPreference(targets []policy.Target, chosen []int, preferences []policy.LabelSelector) {
	matchers := policy.Matchers(preferences)
	ranks := make([]int, len(targets))
	for _, i := range chosen {
		rank := len(preferences)
		for p := range matchers {
			if matchers[p].Matches(targets[i].Labels) {
				rank = p
				break
			}
		}
		ranks[i] = rank
	}
	slices.SortStableFunc(chosen, func(a, b int) int {
		if ranks[a] != ranks[b] {
			return ranks[a] - ranks[b]
		}
		return strings.Compare(targets[a].Name, targets[b].Name)
	})
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

// appendCriteria names what a target had to match: "locationSelectors",
// "region in [a, b]", both joined by " and ", or "no constraint".
func appendCriteria(dst []byte, req policy.PlacementRequest, regions []string) []byte {
	selectors := len(req.Placement.LocationSelectors) > 0
	if selectors {
		dst = append(dst, "locationSelectors"...)
	}
	if regions != nil {
		if selectors {
			dst = append(dst, " and "...)
		}
		dst = append(dst, "region in ["...)
		for i, region := range regions {
			if i > 0 {
				dst = append(dst, ", "...)
			}
			dst = append(dst, region...)
		}
		dst = append(dst, ']')
	}
	if !selectors && regions == nil {
		dst = append(dst, "no constraint"...)
	}
	return dst
}
