package policy

import (
	"fmt"
	"slices"
)

// Matches reports whether labels satisfy every matchLabels entry and every
// matchExpressions requirement. An empty selector matches everything. A
// requirement with an unknown operator never matches: call Validate first to
// report it.
func (s LabelSelector) Matches(labels StringMap) bool {
	for key, want := range s.MatchLabels {
		if got, ok := labels[key]; !ok || got != want {
			return false
		}
	}
	for _, req := range s.MatchExpressions {
		if !req.Matches(labels) {
			return false
		}
	}
	return true
}

// Matches reports whether labels satisfy the requirement, with the
// Kubernetes meaning of each operator: In needs the key with one of the
// values, NotIn needs the key absent or its value not among the values,
// Exists needs the key, DoesNotExist needs it absent.
func (r LabelSelectorRequirement) Matches(labels StringMap) bool {
	value, present := labels[r.Key]
	switch r.Operator {
	case OpIn:
		return present && slices.Contains(r.Values, value)
	case OpNotIn:
		return !present || !slices.Contains(r.Values, value)
	case OpExists:
		return present
	case OpDoesNotExist:
		return !present
	default:
		return false
	}
}

// Validate reports the first malformed requirement of the selector.
func (s LabelSelector) Validate() error {
	for i, req := range s.MatchExpressions {
		if err := req.Validate(); err != nil {
			return fmt.Errorf("matchExpressions[%d]: %w", i, err)
		}
	}
	return nil
}

// Validate checks the key, the operator and the values the operator needs.
func (r LabelSelectorRequirement) Validate() error {
	if r.Key == "" {
		return fmt.Errorf("key is empty: give the label key the requirement tests")
	}
	switch r.Operator {
	case OpIn, OpNotIn:
		if len(r.Values) == 0 {
			return fmt.Errorf("key %q: operator %s needs at least one value", r.Key, r.Operator)
		}
	case OpExists, OpDoesNotExist:
		if len(r.Values) != 0 {
			return fmt.Errorf("key %q: operator %s takes no values, got %d", r.Key, r.Operator, len(r.Values))
		}
	default:
		return fmt.Errorf("key %q: operator %q is not one of In, NotIn, Exists, DoesNotExist", r.Key, r.Operator)
	}
	return nil
}

// MatchesAny reports whether labels match at least one of selectors; an
// empty list matches everything (the meaning of Placement.LocationSelectors).
func MatchesAny(selectors []LabelSelector, labels StringMap) bool {
	if len(selectors) == 0 {
		return true
	}
	for _, s := range selectors {
		if s.Matches(labels) {
			return true
		}
	}
	return false
}

// ValidateSelectors reports the first malformed selector of a list, naming
// the list (for example "placement.locationSelectors") and the index.
func ValidateSelectors(list string, selectors []LabelSelector) error {
	for i, s := range selectors {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("%s[%d].%w", list, i, err)
		}
	}
	return nil
}

// Matcher is a LabelSelector prepared for matching many label sets: its
// matchLabels as a list, so that matching does not iterate a map each time
// (in wasm, starting a map iteration costs about as much as a dozen lookups).
// It matches exactly what the selector matches, as long as the selector is not
// modified afterwards.
type Matcher struct {
	labels      []labelPair
	expressions []LabelSelectorRequirement
}

type labelPair struct{ key, value string }

// Matcher prepares s for matching.
func (s LabelSelector) Matcher() Matcher {
	m := Matcher{expressions: s.MatchExpressions}
	if len(s.MatchLabels) > 0 {
		m.labels = make([]labelPair, 0, len(s.MatchLabels))
		for key, value := range s.MatchLabels {
			m.labels = append(m.labels, labelPair{key, value})
		}
	}
	return m
}

// Matches reports whether labels match the selector (see LabelSelector.Matches).
func (m Matcher) Matches(labels StringMap) bool {
	for _, p := range m.labels {
		if got, ok := labels[p.key]; !ok || got != p.value {
			return false
		}
	}
	for _, req := range m.expressions {
		if !req.Matches(labels) {
			return false
		}
	}
	return true
}

// Matchers prepares a list of selectors for matching (see Matcher).
func Matchers(selectors []LabelSelector) []Matcher {
	out := make([]Matcher, len(selectors))
	for i, s := range selectors {
		out[i] = s.Matcher()
	}
	return out
}

// MatchesAnyOf reports whether labels match at least one of matchers; an
// empty list matches everything, as in MatchesAny.
func MatchesAnyOf(matchers []Matcher, labels StringMap) bool {
	if len(matchers) == 0 {
		return true
	}
	for _, m := range matchers {
		if m.Matches(labels) {
			return true
		}
	}
	return false
}
