package fhirtest

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// evaluate runs a search: every parameter must match (values of one
// parameter are OR-ed, repeats of a parameter AND-ed).
func (s *Server) evaluate(typ string, q map[string][]string) ([]*record, *fhir.ElementSelector, error) {
	var preds []func(*record) bool
	var sortDesc, sorted bool
	var sel *fhir.ElementSelector
	comps := map[string][]string{}
	for _, c := range fhir.PatientCompartmentParams(typ) {
		comps[c.Name] = c.Paths
	}
	known := map[string]bool{"_count": true, "_summary": true, "_format": true, "_sort": true, "_elements": true, "patient": true}
	for _, p := range knownParams(typ) {
		known[p] = true
	}
	for name, values := range q {
		base, _, _ := strings.Cut(name, ":")
		if !known[base] && !strings.HasPrefix(base, "_include") && base != "_revinclude" && base != "_contained" {
			switch s.opts.Unknown {
			case "ignore":
				continue
			case "reject":
				return nil, nil, fmt.Errorf("unknown search parameter %s for %s", name, typ)
			}
		}
		if _, isComp := comps[base]; (isComp || base == "patient") && s.opts.IgnoreCompartment {
			continue
		}
		if slices.Contains(s.opts.IgnoreParams, base) {
			continue
		}
		switch base {
		case "_count", "_summary", "_format":
		case "_include", "_revinclude", "_contained":
			return nil, nil, fmt.Errorf("%s is not supported", name)
		case "_sort":
			if s.opts.NoSort {
				return nil, nil, fmt.Errorf("_sort is not supported")
			}
			switch values[0] {
			case "_lastUpdated", "_lastUpdated,_id": // records are in id order already
				sorted = true
			case "-_lastUpdated":
				sorted, sortDesc = true, true
			default:
				return nil, nil, fmt.Errorf("cannot sort by %s", values[0])
			}
		case "_elements":
			if s.opts.NoElements {
				continue
			}
			var pairs [][2]string
			for _, v := range values {
				for _, e := range strings.Split(v, ",") {
					pairs = append(pairs, [2]string{"", strings.TrimSpace(e)})
				}
			}
			sel = fhir.NewElementSelector(pairs)
		case "_id":
			for _, v := range values {
				set := toSet(v)
				preds = append(preds, func(r *record) bool { return set[r.id] })
			}
		case "_lastUpdated":
			if s.opts.IgnoreLastUpdated {
				continue
			}
			for _, v := range values {
				p, err := datePredicate(v)
				if err != nil {
					return nil, nil, err
				}
				preds = append(preds, p)
			}
		default:
			paths, isRef := comps[base]
			if base == "patient" && !isRef {
				paths, isRef = []string{"subject"}, true
			}
			for _, v := range values {
				if isRef {
					var sets []map[*record]bool
					for _, path := range paths {
						idx := s.refIndex(typ, path)
						for _, ref := range strings.Split(v, ",") {
							sets = append(sets, idx[strings.TrimPrefix(ref, "Patient/")])
						}
					}
					preds = append(preds, func(r *record) bool {
						for _, set := range sets {
							if set[r] {
								return true
							}
						}
						return false
					})
					continue
				}
				preds = append(preds, tokenPredicate(base, v))
			}
		}
	}
	s.mu.RLock()
	var all []*record
	if td := s.types[typ]; td != nil {
		all = td.records
	}
	var out []*record
	for _, r := range all {
		ok := true
		for _, p := range preds {
			if !p(r) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	// Add updates records in place: sort under the lock.
	defer s.mu.RUnlock()
	if sorted {
		sort.SliceStable(out, func(i, j int) bool {
			if sortDesc {
				return out[i].lastUpdated.After(out[j].lastUpdated)
			}
			return out[i].lastUpdated.Before(out[j].lastUpdated)
		})
	}
	return out, sel, nil
}

// refIndex returns (building it once) which records of typ reference
// which patient at path.
func (s *Server) refIndex(typ, path string) map[string]map[*record]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	td := s.types[typ]
	if td == nil {
		return nil
	}
	if td.refs == nil {
		td.refs = map[string]map[string]map[*record]bool{}
	}
	if idx, ok := td.refs[path]; ok {
		return idx
	}
	idx := map[string]map[*record]bool{}
	for _, r := range td.records {
		fhir.ReferencedPatients(r.raw, []string{path}, func(id string) bool {
			if idx[id] == nil {
				idx[id] = map[*record]bool{}
			}
			idx[id][r] = true
			return true
		})
	}
	td.refs[path] = idx
	return idx
}

// knownParams lists the search parameters the server supports for typ:
// KnownParams and the Patient compartment's.
func knownParams(typ string) []string {
	out := slices.Clone(KnownParams)
	for _, c := range fhir.PatientCompartmentParams(typ) {
		if !slices.Contains(out, c.Name) {
			out = append(out, c.Name)
		}
	}
	return out
}

func toSet(v string) map[string]bool {
	set := map[string]bool{}
	for _, x := range strings.Split(v, ",") {
		set[x] = true
	}
	return set
}

// datePredicate is a _lastUpdated comparison (prefix gt, ge, lt, le, eq).
func datePredicate(v string) (func(*record) bool, error) {
	prefix := "eq"
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
		prefix, v = v[:2], v[2:]
	}
	t, err := fhir.ParseInstant(v)
	if err != nil {
		return nil, fmt.Errorf("_lastUpdated: %w", err)
	}
	cmp := map[string]func(time.Time) bool{
		"gt": func(x time.Time) bool { return x.After(t) },
		"ge": func(x time.Time) bool { return !x.Before(t) },
		"lt": func(x time.Time) bool { return x.Before(t) },
		"le": func(x time.Time) bool { return !x.After(t) },
		"eq": func(x time.Time) bool { return x.Equal(t) },
	}[prefix]
	if cmp == nil {
		return nil, fmt.Errorf("_lastUpdated: prefix %q is not supported", prefix)
	}
	return func(r *record) bool { return cmp(r.lastUpdated) }, nil
}

// tokenPredicate matches a simple token parameter against the top-level
// element of the same name (kebab-case read as camelCase): a string, a code,
// or any coding code (optionally system|code) below it. Values are OR-ed.
func tokenPredicate(name, v string) func(*record) bool {
	elem := kebabToCamel(name)
	wants := strings.Split(v, ",")
	return func(r *record) bool {
		found := false
		var visit func(x gjson.Result)
		visit = func(x gjson.Result) {
			if found {
				return
			}
			switch {
			case x.IsArray():
				x.ForEach(func(_, it gjson.Result) bool { visit(it); return !found })
			case x.IsObject():
				if c := x.Get("code"); c.Type == gjson.String && matchToken(x.Get("system").Str, c.Str, wants) {
					found = true
					return
				}
				for _, k := range []string{"coding", "concept"} {
					if c := x.Get(k); c.Exists() {
						visit(c)
					}
				}
			case x.Type == gjson.String:
				found = matchToken("", x.Str, wants)
			case x.Type == gjson.True || x.Type == gjson.False:
				found = matchToken("", x.Raw, wants)
			}
		}
		visit(gjson.GetBytes(r.raw, gjson.Escape(elem)))
		return found
	}
}

func matchToken(system, code string, wants []string) bool {
	for _, w := range wants {
		if sys, c, ok := strings.Cut(w, "|"); ok {
			if c == code && (sys == "" || sys == system) {
				return true
			}
		} else if w == code {
			return true
		}
	}
	return false
}

func kebabToCamel(s string) string {
	parts := strings.Split(s, "-")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
