package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var stringCases = []string{
	`""`, `"plain"`, `"tab\there"`, `"quote \" and \\ and \/"`, `"\b\f\n\r\t"`, `"\u00e9\u4e16"`,
	`"\ud83d\ude00"`, `"lone \ud83d high"`, `"lone \ude00 low"`, `"\ud83d\u0041"`, `"\ud83d"`, "\"raw \xff byte\"",
	"\"caf\xc3\xa9\"", `"\u0000"`, `"\x"`, `"\u12"`, `"\u12G4"`, `"unterminated`, "\"ctl \x01\"", `"\`,
}

// The reader decodes strings exactly like encoding/json, errors included.
func TestReaderStringsMatchEncodingJSON(t *testing.T) {
	for _, doc := range stringCases {
		checkString(t, doc)
	}
}

func checkString(t *testing.T, doc string) {
	t.Helper()
	var want string
	wantErr := json.Unmarshal([]byte(doc), &want)
	r := &reader{data: doc}
	got, err := r.str()
	if err == nil {
		err = r.end()
	}
	if (err == nil) != (wantErr == nil) || got != want && err == nil {
		t.Errorf("%q: reader gave %q (err %v), encoding/json %q (err %v)", doc, got, err, want, wantErr)
	}
}

func FuzzReaderString(f *testing.F) {
	for _, doc := range stringCases {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		if strings.HasPrefix(strings.TrimLeft(doc, " \t\r\n"), `"`) {
			checkString(t, doc)
		}
	})
}

var numberCases = []string{`0`, `7`, `4294967295`, `4294967296`, `-1`, `-0`, `1.0`, `1e2`, `01`, `-`, `1.`, `1e`, `.5`, ` 42 `, `+1`}

func TestReaderUint32MatchesEncodingJSON(t *testing.T) {
	for _, doc := range numberCases {
		var want uint32
		wantErr := json.Unmarshal([]byte(doc), &want)
		r := &reader{data: doc}
		got, err := r.uint32()
		if err == nil {
			err = r.end()
		}
		if (err == nil) != (wantErr == nil) || err == nil && got != want {
			t.Errorf("%q: reader gave %d (err %v), encoding/json %d (err %v)", doc, got, err, want, wantErr)
		}
	}
}

var syntaxCases = []string{
	`{}`, `[]`, `null`, `true`, `false`, `{"a":[1,2,{"b":null}],"c":"d"}`, ` [ 1 , -2.5e+3 , "x" ] `,
	`{"a":1,}`, `[1,]`, `{"a" 1}`, `{a:1}`, `[1 2]`, `nul`, `tru`, `{"a":1}}`, `[`, `{`, `"`, ``, `  `, `{"a":[}`, `[-]`,
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001), strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth),
}

// skip accepts exactly the documents encoding/json accepts.
func TestReaderSkipMatchesValid(t *testing.T) {
	for _, doc := range syntaxCases {
		checkSyntax(t, doc)
	}
}

func checkSyntax(t *testing.T, doc string) {
	t.Helper()
	r := &reader{data: doc}
	err := r.skip()
	if err == nil {
		err = r.end()
	}
	if valid := json.Valid([]byte(doc)); valid != (err == nil) && !tooDeep(err) {
		t.Errorf("%.60q: json.Valid %v, reader error %v", doc, valid, err)
	}
}

// tooDeep tells the one refusal encoding/json does not share: nesting deeper
// than maxDepth (encoding/json allows 10000).
func tooDeep(err error) bool {
	return err != nil && strings.Contains(err.Error(), "nesting deeper than")
}

func TestReaderDepthLimit(t *testing.T) {
	doc := `{"settings":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + "}"
	var req SettingsRequest
	err := req.UnmarshalJSON([]byte(doc))
	if !tooDeep(err) {
		t.Fatalf("nesting %d deep: error %v, want the depth limit", maxDepth+1, err)
	}
	want := "invalid JSON at byte 1011: SettingsRequest.settings" + strings.Repeat("[0]", 12) + "..." +
		strings.Repeat("[0]", 20) + ": nesting deeper than 1000"
	if err.Error() != want {
		t.Errorf("error\n %s\nwant\n %s", err, want)
	}
}

func FuzzReaderSkip(f *testing.F) {
	for _, doc := range syntaxCases {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc string) { checkSyntax(t, doc) })
}

func TestRawKeepsText(t *testing.T) {
	var req SettingsRequest
	if err := json.Unmarshal([]byte(`{"settings": { "a" : [1, 2] } , "other": {"x": null}}`), &req); err != nil {
		t.Fatal(err)
	}
	if string(req.Settings) != `{ "a" : [1, 2] }` {
		t.Errorf("settings %q", req.Settings)
	}
	if err := req.UnmarshalJSON([]byte(`{"settings": null}`)); err != nil || string(req.Settings) != "null" {
		t.Errorf("null settings: %q %v", req.Settings, err)
	}
}

func TestAppendStringRoundTrips(t *testing.T) {
	for _, s := range []string{"", "plain", "quote \" back \\ slash", "\x00\x01\x1f\n\r\t", "<html>&", "é世😀", "bad \xff byte", "\u2028"} {
		checkAppendString(t, s)
	}
}

func checkAppendString(t *testing.T, s string) {
	t.Helper()
	out := appendString(nil, s)
	var back string
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatalf("%q encodes as invalid JSON %s: %v", s, out, err)
	}
	want := s
	if !utf8.ValidString(s) {
		want = string([]rune(s))
	}
	if back != want {
		t.Errorf("%q encodes as %s, which decodes as %q", s, out, back)
	}
	if bytes.Contains(out, []byte(`\u003c`)) {
		t.Errorf("%q: HTML characters must not be escaped: %s", s, out)
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a\"b\\c\x00é\xff")
	f.Fuzz(checkAppendString)
}
