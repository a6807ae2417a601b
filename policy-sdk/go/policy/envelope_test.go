package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestHandleAnswers(t *testing.T) {
	double := func(n int) (int, error) {
		switch n {
		case 0:
			return 0, errors.New("zero is not allowed")
		case 1:
			panic("one")
		}
		return 2 * n, nil
	}
	cases := []struct{ input, want string }{
		{`21`, `{"ok":42}`},
		{`0`, `{"error":"entry: zero is not allowed"}`},
		{`1`, `{"error":"entry: policy panicked: one"}`},
		{`"x"`, `{"error":"entry: input is not a valid int: json: cannot unmarshal string into Go value of type int"}`},
	}
	for _, c := range cases {
		if got := string(Handle("entry", []byte(c.input), double)); got != c.want {
			t.Errorf("input %s: got %s, want %s", c.input, got, c.want)
		}
	}
}

func TestOkEnvelopeReportsEncodingErrors(t *testing.T) {
	got := string(OkEnvelope("entry", func() {}))
	if !strings.HasPrefix(got, `{"error":"entry: cannot encode the answer func()`) {
		t.Errorf("got %s", got)
	}
}

func TestDecodeEnvelope(t *testing.T) {
	ok, message, err := DecodeEnvelope([]byte(`{"ok":{"a":1}}`))
	if err != nil || string(ok) != `{"a":1}` || message != "" {
		t.Errorf("ok envelope: %s %q %v", ok, message, err)
	}
	ok, message, err = DecodeEnvelope(ErrorEnvelope(`bad "quote"`))
	if err != nil || ok != nil || message != `bad "quote"` {
		t.Errorf("error envelope: %s %q %v", ok, message, err)
	}
	for _, bad := range []string{`{}`, `{"ok":1,"error":"x"}`, `{"value":1}`, `[]`, `{"error":3}`, `nope`} {
		if _, _, err := DecodeEnvelope([]byte(bad)); err == nil {
			t.Errorf("%s: accepted, want an error", bad)
		}
	}
}
