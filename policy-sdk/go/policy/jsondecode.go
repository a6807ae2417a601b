package policy

import "encoding/json"

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

// structure reads an object member by member; null leaves the value
// unchanged. member returns handled false for a key it does not know, which
// is then skipped.
func structure(r *reader, member func(key string) (handled bool, err error)) error {
	if r.null() {
		return nil
	}
	return r.object(func(key string) error {
		handled, err := member(key)
		if !handled {
			return r.skip()
		}
		return err
	})
}

func readPlacementRequest(r *reader, p *PlacementRequest) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "workload":
			return true, readWorkload(r, &p.Workload)
		case "placement":
			return true, readPlacement(r, &p.Placement)
		case "settings":
			return true, readRaw(r, &p.Settings)
		case "targets":
			return true, readList(r, &p.Targets, readTarget)
		}
		return false, nil
	})
}

func readTransformRequest(r *reader, t *TransformRequest) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "workload":
			return true, readWorkload(r, &t.Workload)
		case "target":
			return true, readTarget(r, &t.Target)
		case "replicas":
			return true, r.optUint32(&t.Replicas)
		case "settings":
			return true, readRaw(r, &t.Settings)
		}
		return false, nil
	})
}

func readSettingsRequest(r *reader, s *SettingsRequest) error {
	return structure(r, func(key string) (bool, error) {
		if key == "settings" {
			return true, readRaw(r, &s.Settings)
		}
		return false, nil
	})
}

func readWorkload(r *reader, w *Workload) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "apiVersion":
			return true, r.setString(&w.APIVersion)
		case "kind":
			return true, r.setString(&w.Kind)
		case "namespace":
			return true, r.setString(&w.Namespace)
		case "name":
			return true, r.setString(&w.Name)
		case "labels":
			return true, r.stringMap(&w.Labels)
		case "annotations":
			return true, r.stringMap(&w.Annotations)
		case "replicas":
			return true, r.optUint32(&w.Replicas)
		}
		return false, nil
	})
}

func readTarget(r *reader, t *Target) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "name":
			return true, r.setString(&t.Name)
		case "labels":
			return true, r.stringMap(&t.Labels)
		case "location":
			return true, readLocation(r, &t.Location)
		case "ready":
			return true, r.setBool(&t.Ready)
		case "schedulable":
			return true, r.setBool(&t.Schedulable)
		case "capacity":
			return true, r.optUint32(&t.Capacity)
		case "current":
			return true, readAssignment(r, &t.Current)
		}
		return false, nil
	})
}

func readLocation(r *reader, l *Location) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "region":
			return true, r.setString(&l.Region)
		case "zone":
			return true, r.setString(&l.Zone)
		}
		return false, nil
	})
}

func readAssignment(r *reader, a **Assignment) error {
	if r.null() {
		*a = nil
		return nil
	}
	if *a == nil {
		*a = &Assignment{}
	}
	return structure(r, func(key string) (bool, error) {
		if key == "replicas" {
			return true, r.optUint32(&(*a).Replicas)
		}
		return false, nil
	})
}

func readPlacement(r *reader, p *Placement) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "name":
			return true, r.setString(&p.Name)
		case "locationSelectors":
			return true, readList(r, &p.LocationSelectors, readSelector)
		case "locationPreferences":
			return true, readList(r, &p.LocationPreferences, readSelector)
		}
		return false, nil
	})
}

func readSelector(r *reader, s *LabelSelector) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "matchLabels":
			return true, r.stringMap(&s.MatchLabels)
		case "matchExpressions":
			return true, readList(r, &s.MatchExpressions, readRequirement)
		}
		return false, nil
	})
}

func readRequirement(r *reader, q *LabelSelectorRequirement) error {
	return structure(r, func(key string) (bool, error) {
		switch key {
		case "key":
			return true, r.setString(&q.Key)
		case "operator":
			return true, r.setString(&q.Operator)
		case "values":
			return true, r.strings(&q.Values)
		}
		return false, nil
	})
}

// readList reads an array of T with readElem; null sets the list to nil.
func readList[T any](r *reader, list *[]T, readElem func(*reader, *T) error) error {
	if r.null() {
		*list = nil
		return nil
	}
	if r.peek() == '[' {
		*list = []T{}
	}
	return r.array(func() error {
		var elem T
		if err := readElem(r, &elem); err != nil {
			return err
		}
		*list = append(*list, elem)
		return nil
	})
}

// readRaw keeps a value's text; null is kept as the text null.
func readRaw(r *reader, raw *json.RawMessage) error {
	value, err := r.raw()
	if err == nil {
		*raw = value
	}
	return err
}
