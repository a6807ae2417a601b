package policy

import (
	"maps"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Reflection-free encoding of the ABI output types, for the same reason as
// reader. The output is what serde_json writes for the Rust types: members
// in declaration order, map keys sorted, no HTML escaping.

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	if plain := plainEnd(s, 0); plain == len(s) {
		dst = append(dst, s...)
		return append(dst, '"')
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendStringMap appends m as an object with sorted keys ({} when nil).
func appendStringMap(dst []byte, m StringMap) []byte {
	dst = append(dst, '{')
	for i, key := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, key)
		dst = append(dst, ':')
		dst = appendString(dst, m[key])
	}
	return append(dst, '}')
}

func appendStrings(dst []byte, list []string) []byte {
	dst = append(dst, '[')
	for i, s := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

func (d TargetDecision) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, d.Name)
	if d.Replicas != nil {
		dst = append(dst, `,"replicas":`...)
		dst = strconv.AppendUint(dst, uint64(*d.Replicas), 10)
	}
	return append(dst, '}')
}

func appendDecisions(dst []byte, targets []TargetDecision) []byte {
	dst = append(dst, '[')
	for i, t := range targets {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = t.appendJSON(dst)
	}
	return append(dst, ']')
}

func (d PlacementDecision) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"targets":`...)
	dst = appendDecisions(dst, d.Targets)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, d.Reason)
	return append(dst, '}')
}

func (e PlacementDecisionExpectation) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"targets":`...)
	dst = appendDecisions(dst, e.Targets)
	return append(dst, '}')
}

func (e MapEdits) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if len(e.Set) > 0 {
		dst = append(dst, `"set":`...)
		dst = appendStringMap(dst, e.Set)
	}
	if len(e.Remove) > 0 {
		if len(e.Set) > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `"remove":`...)
		dst = appendStrings(dst, e.Remove)
	}
	return append(dst, '}')
}

func (t TransformResult) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if !t.Labels.IsEmpty() {
		dst = append(dst, `"labels":`...)
		dst = t.Labels.appendJSON(dst)
	}
	if !t.Annotations.IsEmpty() {
		if !t.Labels.IsEmpty() {
			dst = append(dst, ',')
		}
		dst = append(dst, `"annotations":`...)
		dst = t.Annotations.appendJSON(dst)
	}
	return append(dst, '}')
}

func (v SettingsVerdict) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"valid":`...)
	dst = strconv.AppendBool(dst, v.Valid)
	if v.Message != "" {
		dst = append(dst, `,"message":`...)
		dst = appendString(dst, v.Message)
	}
	return append(dst, '}')
}
