package main

import (
	"strings"
	"testing"

	"tmc.dev/policy-sdk/go/policytest"
)

func TestValidateSettings(t *testing.T) {
	cases := []struct {
		settings string
		want     string // "" when valid, else a piece of the message
	}{
		{``, ""},
		{`null`, ""},
		{`{}`, ""},
		{`{"mode":"required"}`, ""},
		{`{"mode":"preferred","maxTargets":3}`, ""},
		{`{"maxTargets":null}`, ""},
		{`{"maxTargets":4294967295}`, ""},
		{`{"mode":"Preferred"}`, `mode must be "required" or "preferred", got "Preferred"`},
		{`{"mode":null}`, `mode must be "required" or "preferred", got null`},
		{`{"mode":1}`, `mode must be "required" or "preferred"`},
		{`{"maxTargets":0}`, "maxTargets must be at least 1"},
		{`{"maxTargets":-1}`, "maxTargets must be a whole number"},
		{`{"maxTargets":1.5}`, "maxTargets must be a whole number"},
		{`{"maxTargets":2.0}`, "maxTargets must be a whole number"},
		{`{"maxTargets":"2"}`, "maxTargets must be a whole number"},
		{`{"maxTargets":4294967296}`, "maxTargets must be a whole number"},
		{`{"MaxTargets":2}`, `unknown field "MaxTargets"`},
		{`{"mode":"required","extra":true}`, `unknown field "extra"`},
		{`{"mode":"required","mode":"preferred"}`, `"mode" is given twice`},
		{`"preferred"`, "settings must be a JSON object"},
		{`[1]`, "settings must be a JSON object"},
	}
	for _, c := range cases {
		verdict := policytest.ValidateSettings(t, c.settings)
		switch {
		case c.want == "" && !verdict.Valid:
			t.Errorf("%s: refused (%s), want valid", c.settings, verdict.Message)
		case c.want != "" && (verdict.Valid || !strings.Contains(verdict.Message, c.want)):
			t.Errorf("%s: verdict %+v, want refused with %q", c.settings, verdict, c.want)
		}
	}
}

func TestParseSettingsDefaults(t *testing.T) {
	s, err := parseSettings(nil)
	if err != nil || s.Mode != ModeRequired || s.MaxTargets != nil {
		t.Errorf("defaults: %+v %v", s, err)
	}
	s, err = parseSettings([]byte(`{"mode":"preferred","maxTargets":7}`))
	if err != nil || s.Mode != ModePreferred || s.MaxTargets == nil || *s.MaxTargets != 7 {
		t.Errorf("explicit: %+v %v", s, err)
	}
}
