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

func TestSettingsFieldsAreSorted(t *testing.T) {
	fields, err := SettingsFields(json.RawMessage(` {"b": [1, 2], "a":"x"} `))
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != 2 || fields[0].Key != "a" || string(fields[0].Value) != `"x"` || fields[1].Key != "b" || string(fields[1].Value) != `[1, 2]` {
		t.Errorf("fields %+v", fields)
	}
	if fields, err := SettingsFields(nil); err != nil || fields != nil {
		t.Errorf("absent settings: %v %v", fields, err)
	}
	if _, err := SettingsFields(json.RawMessage(`{"a":1,"a":2}`)); err == nil || !strings.Contains(err.Error(), `"a" is given twice`) {
		t.Errorf("duplicate: %v", err)
	}
}

func TestSettingsString(t *testing.T) {
	for raw, want := range map[string]string{`"x"`: "x", ` "a\"b" `: `a"b`, `null`: ""} {
		if got, err := SettingsString(json.RawMessage(raw)); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", raw, got, err, want)
		}
	}
	for _, raw := range []string{`1`, `"x" "y"`, `{}`, ``} {
		if _, err := SettingsString(json.RawMessage(raw)); err == nil {
			t.Errorf("%s: no error", raw)
		}
	}
}
