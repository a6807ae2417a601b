package policy

import (
	"encoding/json"
	"strconv"
)

// Reflection-free decoding of the ABI input types (see reader). Each
// UnmarshalJSON decodes one complete document; the read* functions decode
// one value in place and are shared between them. Unknown members are
// checked and skipped.

// decode runs read on a whole document; errors name the path from typeName.
func decode(data []byte, typeName string, read func(r *reader) error) error {
	r := &reader{data: string(data)} // one copy: strings are substrings of it
	err := read(r)
	if err == nil {
		err = r.end()
	}
	if err != nil {
		return within(err, typeName)
	}
	return nil
}

// UnmarshalJSON decodes a PlacementRequest without reflection.
func (p *PlacementRequest) UnmarshalJSON(data []byte) error {
	return decode(data, "PlacementRequest", func(r *reader) error { return readPlacementRequest(r, p) })
}

// UnmarshalJSON decodes a TransformRequest without reflection.
func (t *TransformRequest) UnmarshalJSON(data []byte) error {
	return decode(data, "TransformRequest", func(r *reader) error { return readTransformRequest(r, t) })
}

// UnmarshalJSON decodes a SettingsRequest without reflection.
func (s *SettingsRequest) UnmarshalJSON(data []byte) error {
	return decode(data, "SettingsRequest", func(r *reader) error { return readSettingsRequest(r, s) })
}

// UnmarshalJSON decodes a Workload without reflection.
func (w *Workload) UnmarshalJSON(data []byte) error {
	return decode(data, "Workload", func(r *reader) error { return readWorkload(r, w) })
}

// UnmarshalJSON decodes a Target without reflection.
func (t *Target) UnmarshalJSON(data []byte) error {
	return decode(data, "Target", func(r *reader) error { return readTarget(r, t) })
}

// UnmarshalJSON decodes a Placement without reflection.
func (p *Placement) UnmarshalJSON(data []byte) error {
	return decode(data, "Placement", func(r *reader) error { return readPlacement(r, p) })
}

// UnmarshalJSON decodes a LabelSelector without reflection.
func (s *LabelSelector) UnmarshalJSON(data []byte) error {
	return decode(data, "LabelSelector", func(r *reader) error { return readSelector(r, s) })
}

// Each read* function below is one loop over the members of its object
// (see reader.member); unknown members are checked and skipped, null leaves
// the value unchanged.

func readPlacementRequest(r *reader, p *PlacementRequest) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "workload":
			err = readWorkload(r, &p.Workload)
		case "placement":
			err = readPlacement(r, &p.Placement)
		case "settings":
			err = readRaw(r, &p.Settings)
		case "targets":
			err = readTargets(r, &p.Targets)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readTransformRequest(r *reader, t *TransformRequest) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "workload":
			err = readWorkload(r, &t.Workload)
		case "target":
			err = readTarget(r, &t.Target)
		case "replicas":
			err = r.optUint32(&t.Replicas)
		case "settings":
			err = readRaw(r, &t.Settings)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readSettingsRequest(r *reader, s *SettingsRequest) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		if key == "settings" {
			err = readRaw(r, &s.Settings)
		} else {
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readWorkload(r *reader, w *Workload) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "apiVersion":
			err = r.setString(&w.APIVersion)
		case "kind":
			err = r.setString(&w.Kind)
		case "namespace":
			err = r.setString(&w.Namespace)
		case "name":
			err = r.setString(&w.Name)
		case "labels":
			err = r.stringMap(&w.Labels)
		case "annotations":
			err = r.stringMap(&w.Annotations)
		case "replicas":
			err = r.optUint32(&w.Replicas)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

// readTargets reads the list of targets, decoding each in place.
func readTargets(r *reader, list *[]Target) error {
	if r.peek() == 'n' && r.nullLiteral() {
		*list = nil
		return nil
	}
	if err := r.openArray(); err != nil {
		return err
	}
	targets := []Target{}
	defer func() { *list = targets }()
	for i := 0; ; i++ {
		if more, err := r.element(i); err != nil || !more {
			return err
		}
		if len(targets) == cap(targets) {
			targets = append(make([]Target, 0, max(8, 2*len(targets))), targets...)
		}
		targets = targets[:i+1]
		if err := readTarget(r, &targets[i]); err != nil {
			return within(err, "["+strconv.Itoa(i)+"]")
		}
	}
}

func readTarget(r *reader, t *Target) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "name":
			err = r.setString(&t.Name)
		case "labels":
			err = r.stringMap(&t.Labels)
		case "location":
			err = readLocation(r, &t.Location)
		case "ready":
			err = r.setBool(&t.Ready)
		case "schedulable":
			err = r.setBool(&t.Schedulable)
		case "capacity":
			err = r.optUint32(&t.Capacity)
		case "current":
			err = readAssignment(r, &t.Current)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readLocation(r *reader, l *Location) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "region":
			err = r.setString(&l.Region)
		case "zone":
			err = r.setString(&l.Zone)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readAssignment(r *reader, a **Assignment) error {
	if r.peek() == 'n' && r.nullLiteral() {
		*a = nil
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	if *a == nil {
		*a = &Assignment{}
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		if key == "replicas" {
			err = r.optUint32(&(*a).Replicas)
		} else {
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readPlacement(r *reader, p *Placement) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "name":
			err = r.setString(&p.Name)
		case "locationSelectors":
			err = readList(r, &p.LocationSelectors, readSelector)
		case "locationPreferences":
			err = readList(r, &p.LocationPreferences, readSelector)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readSelector(r *reader, s *LabelSelector) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "matchLabels":
			err = r.stringMap(&s.MatchLabels)
		case "matchExpressions":
			err = readList(r, &s.MatchExpressions, readRequirement)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

func readRequirement(r *reader, q *LabelSelectorRequirement) error {
	if r.peek() == 'n' && r.nullLiteral() {
		return nil
	}
	if err := r.openObject(); err != nil {
		return err
	}
	for key, first := "", true; ; first = false {
		var more bool
		var err error
		if key, more, err = r.member(first, key); err != nil || !more {
			return err
		}
		switch key {
		case "key":
			err = r.setString(&q.Key)
		case "operator":
			err = r.setString(&q.Operator)
		case "values":
			err = r.strings(&q.Values)
		default:
			err = r.skip()
		}
		if err != nil {
			return within(err, "."+key)
		}
	}
}

// readList reads an array of T with readElem, each decoded in place; null
// sets the list to nil.
func readList[T any](r *reader, list *[]T, readElem func(*reader, *T) error) error {
	if r.peek() == 'n' && r.nullLiteral() {
		*list = nil
		return nil
	}
	if err := r.openArray(); err != nil {
		return err
	}
	*list = []T{}
	for i := 0; ; i++ {
		if more, err := r.element(i); err != nil || !more {
			return err
		}
		var zero T
		*list = append(*list, zero)
		if err := readElem(r, &(*list)[i]); err != nil {
			return within(err, "["+strconv.Itoa(i)+"]")
		}
	}
}

// readRaw keeps a value's text; null is kept as the text null.
func readRaw(r *reader, raw *json.RawMessage) error {
	value, err := r.raw()
	if err == nil {
		*raw = value
	}
	return err
}
