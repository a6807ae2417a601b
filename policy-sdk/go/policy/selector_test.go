package policy

import (
	"strings"
	"testing"
)

func TestSelectorMatches(t *testing.T) {
	labels := StringMap{"region": "eu", "tier": "gold"}
	cases := []struct {
		name     string
		selector LabelSelector
		want     bool
	}{
		{"empty selector", LabelSelector{}, true},
		{"matchLabels equal", LabelSelector{MatchLabels: StringMap{"region": "eu"}}, true},
		{"matchLabels all needed", LabelSelector{MatchLabels: StringMap{"region": "eu", "tier": "silver"}}, false},
		{"matchLabels missing key", LabelSelector{MatchLabels: StringMap{"zone": "a"}}, false},
		{"In hit", expr("region", OpIn, "us", "eu"), true},
		{"In miss", expr("region", OpIn, "us"), false},
		{"In absent key", expr("zone", OpIn, "a"), false},
		{"NotIn hit", expr("region", OpNotIn, "eu"), false},
		{"NotIn miss", expr("region", OpNotIn, "us"), true},
		{"NotIn absent key", expr("zone", OpNotIn, "a"), true},
		{"Exists present", expr("tier", OpExists), true},
		{"Exists absent", expr("zone", OpExists), false},
		{"DoesNotExist present", expr("tier", OpDoesNotExist), false},
		{"DoesNotExist absent", expr("zone", OpDoesNotExist), true},
		{"unknown operator", expr("region", "Equals", "eu"), false},
		{"labels and expressions", LabelSelector{
			MatchLabels:      StringMap{"tier": "gold"},
			MatchExpressions: []LabelSelectorRequirement{{Key: "region", Operator: OpNotIn, Values: []string{"eu"}}},
		}, false},
	}
	for _, c := range cases {
		if got := c.selector.Matches(labels); got != c.want {
			t.Errorf("%s: Matches = %v, want %v", c.name, got, c.want)
		}
	}
	if !(LabelSelector{}).Matches(nil) {
		t.Error("an empty selector must match a target without labels")
	}
}

func expr(key, op string, values ...string) LabelSelector {
	return LabelSelector{MatchExpressions: []LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func TestMatchesAny(t *testing.T) {
	labels := StringMap{"region": "eu"}
	if !MatchesAny(nil, labels) {
		t.Error("no selectors must match everything")
	}
	if MatchesAny([]LabelSelector{expr("region", OpIn, "us")}, labels) {
		t.Error("one non-matching selector must not match")
	}
	if !MatchesAny([]LabelSelector{expr("region", OpIn, "us"), expr("region", OpExists)}, labels) {
		t.Error("the second selector matches")
	}
}

func TestSelectorValidate(t *testing.T) {
	cases := []struct {
		selector LabelSelector
		wantErr  string
	}{
		{expr("a", OpIn, "x"), ""},
		{expr("a", OpNotIn, "x"), ""},
		{expr("a", OpExists), ""},
		{expr("a", OpDoesNotExist), ""},
		{expr("a", OpIn), "needs at least one value"},
		{expr("a", OpNotIn), "needs at least one value"},
		{expr("a", OpExists, "x"), "takes no values"},
		{expr("a", OpDoesNotExist, "x"), "takes no values"},
		{expr("a", "in", "x"), `operator "in" is not one of`},
		{expr("", OpExists), "key is empty"},
	}
	for _, c := range cases {
		err := ValidateSelectors("placement.locationSelectors", []LabelSelector{c.selector})
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", c.selector, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%+v: error %v, want one containing %q", c.selector, err, c.wantErr)
		case err != nil && !strings.HasPrefix(err.Error(), "placement.locationSelectors[0].matchExpressions[0]: "):
			t.Errorf("error %q does not name the selector", err)
		}
	}
}

// A Matcher matches exactly what its selector matches.
func TestMatcherAgreesWithSelector(t *testing.T) {
	selectors := []LabelSelector{
		{},
		{MatchLabels: StringMap{"env": "prod"}},
		{MatchLabels: StringMap{"env": "prod", "tier": "gold"}},
		{MatchExpressions: []LabelSelectorRequirement{{Key: "gpu", Operator: OpExists}}},
		{MatchLabels: StringMap{"env": "prod"}, MatchExpressions: []LabelSelectorRequirement{{Key: "tier", Operator: OpIn, Values: []string{"gold"}}}},
	}
	labelSets := []StringMap{nil, {}, {"env": "prod"}, {"env": "dev"}, {"env": "prod", "tier": "gold"}, {"gpu": "", "env": "prod", "tier": "silver"}}
	for i, s := range selectors {
		m := s.Matcher()
		for _, labels := range labelSets {
			if got, want := m.Matches(labels), s.Matches(labels); got != want {
				t.Errorf("selector %d, labels %v: matcher %v, selector %v", i, labels, got, want)
			}
		}
	}
	for _, labels := range labelSets {
		for n := range len(selectors) + 1 {
			if got, want := MatchesAnyOf(Matchers(selectors[:n]), labels), MatchesAny(selectors[:n], labels); got != want {
				t.Errorf("first %d selectors, labels %v: %v, want %v", n, labels, got, want)
			}
		}
	}
}
