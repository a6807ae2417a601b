package policy

import (
	"encoding/json"
	"fmt"
)

// Handle decodes input as a Req, runs fn and encodes the answer in the
// response envelope every entry point uses: {"ok": <value>} or
// {"error": "<message>"}. entry names the entry point in error messages. A
// panic in fn becomes an error answer instead of a trap.
func Handle[Req, Resp any](entry string, input []byte, fn func(Req) (Resp, error)) (out []byte) {
	defer func() {
		if p := recover(); p != nil {
			out = ErrorEnvelope(fmt.Sprintf("%s: policy panicked: %v", entry, p))
		}
	}()
	var req Req
	if err := unmarshal(input, &req); err != nil {
		return ErrorEnvelope(fmt.Sprintf("%s: input is not a valid %T: %v", entry, req, err))
	}
	resp, err := fn(req)
	if err != nil {
		return ErrorEnvelope(fmt.Sprintf("%s: %v", entry, err))
	}
	return OkEnvelope(entry, resp)
}

// unmarshal decodes input into v, calling the reflection-free decoder of the
// ABI types directly (json.Unmarshal would scan the input once more first).
func unmarshal(input []byte, v any) error {
	if u, ok := v.(json.Unmarshaler); ok {
		return u.UnmarshalJSON(input)
	}
	return json.Unmarshal(input, v)
}

// appender is an ABI output type that encodes itself without reflection.
type appender interface {
	appendJSON(dst []byte) []byte
}

// OkEnvelope encodes {"ok": value}, or an error envelope naming entry if
// value cannot be encoded.
func OkEnvelope(entry string, value any) []byte {
	out := append(make([]byte, 0, 512), `{"ok":`...)
	if a, ok := value.(appender); ok {
		out = a.appendJSON(out)
	} else {
		encoded, err := json.Marshal(value)
		if err != nil {
			return ErrorEnvelope(fmt.Sprintf("%s: cannot encode the answer %T: %v", entry, value, err))
		}
		out = append(out, encoded...)
	}
	return append(out, '}')
}

// ErrorEnvelope encodes {"error": message}.
func ErrorEnvelope(message string) []byte {
	return append(appendString([]byte(`{"error":`), message), '}')
}

// DecodeEnvelope splits an answer into its ok value and its error message;
// exactly one of them is set when err is nil.
func DecodeEnvelope(answer []byte) (ok json.RawMessage, message string, err error) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(answer, &env); err != nil {
		return nil, "", fmt.Errorf("answer %q is not a JSON object: %w", truncate(answer), err)
	}
	okValue, hasOk := env["ok"]
	errValue, hasErr := env["error"]
	switch {
	case len(env) != 1 || hasOk == hasErr:
		return nil, "", fmt.Errorf(`answer %q must have exactly one key, "ok" or "error"`, truncate(answer))
	case hasOk:
		return okValue, "", nil
	default:
		if err := json.Unmarshal(errValue, &message); err != nil {
			return nil, "", fmt.Errorf("answer %q: error is not a string: %w", truncate(answer), err)
		}
		return nil, message, nil
	}
}

func truncate(b []byte) string {
	const limit = 200
	if len(b) > limit {
		return string(b[:limit]) + "..."
	}
	return string(b)
}
