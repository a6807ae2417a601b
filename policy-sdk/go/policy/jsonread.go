package policy

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// reader decodes the ABI's JSON inputs without reflection. encoding/json
// builds its per-type caches by reflection on first use, and a policy module
// starts from a fresh instance for every evaluation, so it would pay that
// cost every time; this reader decodes the same documents to the same values
// in a fraction of the instructions.
//
// It follows encoding/json where a document leaves room: null leaves strings,
// numbers, booleans and structs unchanged and sets maps, slices and pointers
// to nil; objects decode into the existing value; the last duplicate member
// wins; invalid UTF-8 and lone surrogates become U+FFFD. Unlike encoding/json
// (and like the Rust side) member names match exactly, not case-insensitively.
//
// It reads a string: strings without escapes (nearly all of them) are
// substrings of it and cost no allocation, so decode copies the input into a
// string once.
type reader struct {
	data  string
	pos   int
	depth int
}

// maxDepth bounds nesting. encoding/json allows 10000, but in wasm each
// level is a few calls on the engine's stack (wasmtime's default is 512 KiB),
// so a deeper document would trap instead of being answered with an error.
const maxDepth = 1000

// decodeError is a decoding failure at a byte offset. The path to the value
// ("PlacementRequest.targets[0].ready") is prefixed while the error travels
// up, so a successful decode never builds it.
type decodeError struct {
	pos  int
	path string
	msg  string
}

func (e *decodeError) Error() string {
	const keep = 60 // a path longer than 2*keep shows its ends only
	path := e.path
	if len(path) > 2*keep {
		path = path[:keep] + "..." + path[len(path)-keep:]
	}
	if path == "" {
		return fmt.Sprintf("invalid JSON at byte %d: %s", e.pos, e.msg)
	}
	return fmt.Sprintf("invalid JSON at byte %d: %s: %s", e.pos, path, e.msg)
}

func (r *reader) errorf(format string, args ...any) error {
	return &decodeError{pos: r.pos, msg: fmt.Sprintf(format, args...)}
}

// within prefixes segment to the path of a decodeError.
func within(err error, segment string) error {
	if e, ok := err.(*decodeError); ok {
		e.path = segment + e.path
	}
	return err
}

func (r *reader) skipSpace() {
	data, pos := r.data, r.pos
	for pos < len(data) && data[pos] <= ' ' && (data[pos] == ' ' || data[pos] == '\t' || data[pos] == '\n' || data[pos] == '\r') {
		pos++
	}
	r.pos = pos
}

// peek returns the next significant byte, or 0 at the end (a 0 byte in the
// data is never valid JSON there, so callers need not tell them apart).
// Small enough to be inlined: in Go's wasm code a call costs dozens of
// instructions, and peek runs several times per token.
func (r *reader) peek() byte {
	data, pos := r.data, r.pos
	for pos < len(data) {
		if c := data[pos]; c > ' ' || c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			r.pos = pos
			return c
		}
		pos++
	}
	r.pos = pos
	return 0
}

// describe names the value starting at the current position for errors.
func (r *reader) describe() string {
	if r.skipSpace(); r.pos >= len(r.data) {
		return "the end of the input"
	}
	switch r.data[r.pos] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "a number"
	default:
		return fmt.Sprintf("the character %q", r.data[r.pos])
	}
}

func (r *reader) literal(word string) bool {
	if len(r.data)-r.pos >= len(word) && r.data[r.pos:r.pos+len(word)] == word {
		r.pos += len(word)
		return true
	}
	return false
}

// null consumes a null literal if one is next. The decoders spell it
// r.peek() == 'n' && r.nullLiteral(), which is inlined up to the call.
func (r *reader) null() bool {
	return r.peek() == 'n' && r.nullLiteral()
}

// nullLiteral consumes a null literal at the current position if there is one.
func (r *reader) nullLiteral() bool {
	return r.literal("null")
}

// end checks that only whitespace is left.
func (r *reader) end() error {
	if r.skipSpace(); r.pos < len(r.data) {
		return r.errorf("unexpected data after the top-level value")
	}
	return nil
}

// The decoders walk objects and arrays with loops over these steps, not
// with callbacks: in Go's wasm code every call and closure costs dozens of
// instructions, and these run for every member of every input.
//
//	if err := r.openObject(); err != nil { return err }
//	for key, first := "", true; ; first = false {
//		key, more, err := r.member(first, key) // key: the previous member's, for errors
//		...
//	}

// openObject consumes the '{' of an object. The caller handles null.
func (r *reader) openObject() error {
	if r.peek() != '{' {
		return r.errorf("must be an object, got %s", r.describe())
	}
	if r.depth++; r.depth > maxDepth {
		return r.errorf("nesting deeper than %d", maxDepth)
	}
	r.pos++
	return nil
}

// member reads the next member's name and its ':' (first: right after the
// '{'), leaving the reader on the value; more is false, and the object
// consumed, at its '}'. prev is the previous member's name, for errors.
func (r *reader) member(first bool, prev string) (key string, more bool, err error) {
	c := r.peek()
	switch {
	case c == '}':
		r.pos++
		r.depth--
		return "", false, nil
	case first:
	case c == ',':
		r.pos++
		c = r.peek()
	default:
		return "", false, within(r.errorf("expected ',' or '}' after the member"), "."+prev)
	}
	if c != '"' {
		return "", false, r.errorf("expected a member name, got %s", r.describe())
	}
	// str's fast path, written out for the names: a call costs dozens of
	// instructions.
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	data, start := r.data, r.pos+1
	key = ""
	for i := start; i+8 <= len(data); i += 8 {
		x := load64(data, i)
		quotes, backslashes := x^('"'*ones), x^('\\'*ones)
		if special := (x | (quotes-ones)&^quotes | (backslashes-ones)&^backslashes | (x-0x20*ones)&^x) & highs; special != 0 {
			if end := i + bits.TrailingZeros64(special)/8; data[end] == '"' {
				r.pos = end + 1
				key = data[start:end]
			}
			break
		}
	}
	if r.pos < start {
		if key, err = r.strSlow(start); err != nil {
			return "", false, err
		}
	}
	if r.peek() != ':' {
		return "", false, within(r.errorf("expected ':' after the member name"), "."+key)
	}
	r.pos++
	return key, true, nil
}

// object reads an object, calling member for each key with the reader placed
// on the value; member must consume the value. The caller handles null.
func (r *reader) object(member func(key string) error) error {
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		if err := member(key); err != nil {
			return within(err, "."+key)
		}
	}
}

// openArray consumes the '[' of an array. The caller handles null.
func (r *reader) openArray() error {
	if r.peek() != '[' {
		return r.errorf("must be an array, got %s", r.describe())
	}
	if r.depth++; r.depth > maxDepth {
		return r.errorf("nesting deeper than %d", maxDepth)
	}
	r.pos++
	return nil
}

// element moves to element i (0: right after the '['), leaving the reader
// on it; false, and the array consumed, at its ']'.
func (r *reader) element(i int) (bool, error) {
	switch c := r.peek(); {
	case i == 0 && c != ']':
		return true, nil
	case c == ']':
		r.pos++
		r.depth--
		return false, nil
	case c == ',':
		r.pos++
		return true, nil
	}
	return false, within(r.errorf("expected ',' or ']' after an element"), "["+strconv.Itoa(i-1)+"]")
}

// array reads an array, calling elem with the reader placed on each element.
// The caller handles null.
func (r *reader) array(elem func() error) error {
	if err := r.openArray(); err != nil {
		return err
	}
	for i := 0; ; i++ {
		if more, err := r.element(i); err != nil || !more {
			return err
		}
		if err := elem(); err != nil {
			return within(err, "["+strconv.Itoa(i)+"]")
		}
	}
}

// str reads a string; without escapes the result is a substring of the
// input (no allocation).
func (r *reader) str() (string, error) {
	if r.peek() != '"' {
		return "", r.errorf("must be a string, got %s", r.describe())
	}
	// plainEnd's loop, written out: a call costs dozens of instructions.
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	data, start := r.data, r.pos+1
	for i := start; i+8 <= len(data); i += 8 {
		x := load64(data, i)
		quotes, backslashes := x^('"'*ones), x^('\\'*ones)
		if special := (x | (quotes-ones)&^quotes | (backslashes-ones)&^backslashes | (x-0x20*ones)&^x) & highs; special != 0 {
			if end := i + bits.TrailingZeros64(special)/8; data[end] == '"' {
				r.pos = end + 1
				return data[start:end], nil
			}
			break
		}
	}
	return r.strSlow(start)
}

// plainEnd returns the index of the first byte of s from i on that a JSON
// string does not hold as it is ('"', '\\', a control character or
// non-ASCII), or len(s). It looks at 8 bytes at a time: a byte-by-byte loop
// costs about 40 wasm instructions per byte.
func plainEnd(s string, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(s); i += 8 {
		x := load64(s, i)
		quotes, backslashes := x^('"'*ones), x^('\\'*ones)
		// Exact for the first special byte: a borrow only starts at a
		// byte that is itself special.
		if special := (x | (quotes-ones)&^quotes | (backslashes-ones)&^backslashes | (x-0x20*ones)&^x) & highs; special != 0 {
			return i + bits.TrailingZeros64(special)/8
		}
	}
	for ; i < len(s) && plainASCII[s[i]]; i++ {
	}
	return i
}

// strSlow reads the string that starts at start (just after the quote)
// byte by byte: escapes, control characters, non-ASCII, no closing quote.
func (r *reader) strSlow(start int) (string, error) {
	data := r.data
	ascii := true
	for pos := start; pos < len(data); pos++ {
		c := data[pos]
		if plainASCII[c] {
			continue
		}
		switch {
		case c == '"':
			r.pos = pos + 1
			s := data[start:pos]
			if ascii || utf8.ValidString(s) {
				return s, nil
			}
			return string([]rune(s)), nil // invalid bytes become U+FFFD
		case c == '\\':
			r.pos = pos
			return r.slowString(start)
		case c < 0x20:
			r.pos = pos
			return "", r.errorf("control character %#x in a string", c)
		}
		ascii = false
	}
	r.pos = len(data)
	return "", r.errorf("unterminated string")
}

// plainASCII marks the bytes a string holds as they are: ASCII but for
// control characters, '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// slowString decodes a string with escapes from start (just after the quote).
func (r *reader) slowString(start int) (string, error) {
	buf := make([]byte, 0, r.pos-start+16)
	r.pos = start
	for r.pos < len(r.data) {
		c := r.data[r.pos]
		switch {
		case c == '"':
			r.pos++
			return string(buf), nil
		case c < 0x20:
			return "", r.errorf("control character %#x in a string", c)
		case c == '\\':
			if r.pos+1 >= len(r.data) {
				return "", r.errorf("unterminated string")
			}
			esc := r.data[r.pos+1]
			r.pos += 2
			switch esc {
			case '"', '\\', '/':
				buf = append(buf, esc)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				rn, ok := r.hex4()
				if !ok {
					return "", r.errorf(`\u needs four hex digits`)
				}
				if utf16.IsSurrogate(rn) {
					rn = r.lowSurrogate(rn)
				}
				buf = utf8.AppendRune(buf, rn)
			default:
				return "", r.errorf(`invalid escape \%c`, esc)
			}
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			r.pos++
		default:
			rn, size := utf8.DecodeRuneInString(r.data[r.pos:])
			buf = utf8.AppendRune(buf, rn) // RuneError for invalid bytes
			r.pos += size
		}
	}
	return "", r.errorf("unterminated string")
}

// hex4 reads the four hex digits of a \u escape.
func (r *reader) hex4() (rune, bool) {
	if len(r.data)-r.pos < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(r.data[r.pos:r.pos+4], 16, 32)
	if err != nil {
		return 0, false
	}
	r.pos += 4
	return rune(n), true
}

// lowSurrogate completes a surrogate pair if a \u low surrogate follows high;
// otherwise high decodes as U+FFFD and what follows is left to the caller.
func (r *reader) lowSurrogate(high rune) rune {
	save := r.pos
	if r.pos+1 < len(r.data) && r.data[r.pos] == '\\' && r.data[r.pos+1] == 'u' {
		r.pos += 2
		if low, ok := r.hex4(); ok {
			if combined := utf16.DecodeRune(high, low); combined != utf8.RuneError {
				return combined
			}
		}
	}
	r.pos = save
	return utf8.RuneError
}

// number scans a number token per the JSON grammar and returns its text.
func (r *reader) number() (string, error) {
	r.skipSpace()
	start := r.pos
	digits := func() int {
		n := 0
		for r.pos < len(r.data) && r.data[r.pos] >= '0' && r.data[r.pos] <= '9' {
			r.pos++
			n++
		}
		return n
	}
	if r.pos < len(r.data) && r.data[r.pos] == '-' {
		r.pos++
	}
	switch {
	case r.pos < len(r.data) && r.data[r.pos] == '0':
		r.pos++
	case digits() == 0:
		r.pos = start
		return "", r.errorf("must be a number, got %s", r.describe())
	}
	if r.pos < len(r.data) && r.data[r.pos] == '.' {
		r.pos++
		if digits() == 0 {
			return "", r.errorf("a digit must follow the decimal point")
		}
	}
	if r.pos < len(r.data) && (r.data[r.pos] == 'e' || r.data[r.pos] == 'E') {
		r.pos++
		if r.pos < len(r.data) && (r.data[r.pos] == '+' || r.data[r.pos] == '-') {
			r.pos++
		}
		if digits() == 0 {
			return "", r.errorf("a digit must follow the exponent")
		}
	}
	return r.data[start:r.pos], nil
}

// uint32 reads a whole number from 0 to 4294967295.
func (r *reader) uint32() (uint32, error) {
	if c := r.peek(); c != '-' && (c < '0' || c > '9') {
		return 0, r.errorf("must be a number, got %s", r.describe())
	}
	text, err := r.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(text, 10, 32)
	if err != nil {
		return 0, r.errorf("must be a whole number from 0 to 4294967295, got %s", text)
	}
	return uint32(n), nil
}

// boolean reads true or false.
func (r *reader) boolean() (bool, error) {
	switch {
	case r.peek() == 't' && r.literal("true"):
		return true, nil
	case r.peek() == 'f' && r.literal("false"):
		return false, nil
	}
	return false, r.errorf("must be a boolean, got %s", r.describe())
}

// skip reads and checks any value.
func (r *reader) skip() error {
	switch r.peek() {
	case '{':
		return r.object(func(string) error { return r.skip() })
	case '[':
		return r.array(r.skip)
	case '"':
		_, err := r.str()
		return err
	case 't', 'f':
		_, err := r.boolean()
		return err
	case 'n':
		if r.peek() == 'n' && r.nullLiteral() {
			return nil
		}
		return r.errorf("invalid literal")
	default:
		_, err := r.number()
		return err
	}
}

// raw reads any value and returns a copy of its text.
func (r *reader) raw() (json.RawMessage, error) {
	r.skipSpace()
	start := r.pos
	if err := r.skip(); err != nil {
		return nil, err
	}
	return json.RawMessage(r.data[start:r.pos]), nil
}

// stringMap reads an object of strings into *m, creating it if nil; null
// sets it to nil.
func (r *reader) stringMap(m *StringMap) error {
	if r.peek() == 'n' && r.nullLiteral() {
		*m = nil
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			if *m == nil && err == nil {
				*m = StringMap{}
			}
			return err
		}
		if *m == nil {
			*m = make(StringMap, 8) // room for 8: one allocation of the map's slots
		}
		var value string // null stores "", as encoding/json does
		if err := r.setString(&value); err != nil {
			return within(err, "."+key)
		}
		(*m)[key] = value
	}
}

// strings reads an array of strings; null sets it to nil.
func (r *reader) strings(list *[]string) error {
	if r.peek() == 'n' && r.nullLiteral() {
		*list = nil
		return nil
	}
	if err := r.openArray(); err != nil {
		return err
	}
	*list = []string{}
	for i := 0; ; i++ {
		if more, err := r.element(i); err != nil || !more {
			return err
		}
		var s string // null appends "", as encoding/json does
		if err := r.setString(&s); err != nil {
			return within(err, "["+strconv.Itoa(i)+"]")
		}
		*list = append(*list, s)
	}
}

// optUint32 reads a number into a new *uint32; null sets it to nil.
func (r *reader) optUint32(p **uint32) error {
	if r.peek() == 'n' && r.nullLiteral() {
		*p = nil
		return nil
	}
	n, err := r.uint32()
	if err == nil {
		*p = &n
	}
	return err
}

// setString reads a string into *s; null leaves it unchanged.
func (r *reader) setString(s *string) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	v, err := r.str()
	if err == nil {
		*s = v
	}
	return err
}

// setBool reads a boolean into *b; null leaves it unchanged.
func (r *reader) setBool(b *bool) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	v, err := r.boolean()
	if err == nil {
		*b = v
	}
	return err
}
