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
