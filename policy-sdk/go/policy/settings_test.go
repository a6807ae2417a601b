package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDefaultSettingsValidator(t *testing.T) {
	cases := []struct {
		settings string
		want     string
	}{
		{``, `{"ok":{"valid":true}}`},
		{`null`, `{"ok":{"valid":true}}`},
		{`{}`, `{"ok":{"valid":true}}`},
		{`{"a":1}`, `{"ok":{"valid":false,"message":"this policy takes no settings: remove them from the placement"}}`},
		{`[1]`, `{"ok":{"valid":false,"message":"settings must be a JSON object, got [1]"}}`},
	}
	for _, c := range cases {
		input, err := json.Marshal(SettingsRequest{Settings: json.RawMessage(c.settings)})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(HandleValidateSettings(input)); got != c.want {
			t.Errorf("settings %q: got %s, want %s", c.settings, got, c.want)
		}
	}
}

func TestSettingsObject(t *testing.T) {
	fields, err := SettingsObject(json.RawMessage(` {"Mode":"x","mode":"y"} `))
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != 2 || string(fields["mode"]) != `"y"` {
		t.Errorf("field names must be kept exactly, got %v", fields)
	}
	if _, err := SettingsObject(json.RawMessage(`"x"`)); err == nil || !strings.Contains(err.Error(), "must be a JSON object") {
		t.Errorf("a string must be refused, got %v", err)
	}
	for doc, want := range map[string]string{
		`{"a":1,"a":2}`: `settings field "a" is given twice`,
		`{"a":}`:        `settings field "a" is not valid JSON`,
		`{"a":1} {}`:    `data after the object`,
		`{"a":1`:        `not a valid JSON object`,
	} {
		if _, err := SettingsObject(json.RawMessage(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", doc, err, want)
		}
	}
	if !IsNull(nil) || !IsNull(json.RawMessage(" null")) || IsNull(json.RawMessage("{}")) {
		t.Error("IsNull is wrong")
	}
}
