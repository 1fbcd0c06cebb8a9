package bulkclient

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
)

// Manifest and Entry are the protocol's manifest types.
type (
	Manifest = bulkdata.Manifest
	Entry    = bulkdata.ManifestFile
)

// parseManifest validates a manifest: required fields, and an absolute
// http(s) URL and a type for every file.
func parseManifest(raw []byte) (*Manifest, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fail("malformed manifest: not a JSON object: %v", err)
	}
	for _, k := range []string{"transactionTime", "output"} {
		if _, ok := fields[k]; !ok {
			return nil, fail("malformed manifest: no %q", k)
		}
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fail("malformed manifest: %v", err)
	}
	for kind, list := range map[string][]Entry{"output": m.Output, "error": m.Error, "deleted": m.Deleted} {
		for i, e := range list {
			u, err := url.Parse(e.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fail("malformed manifest: %s[%d].url %q is not an absolute http(s) URL", kind, i, e.URL)
			}
			// Output organized by a resource type has no type (M-12).
			if e.Type == "" && (kind != "output" || m.OutputOrganizedBy == "") {
				return nil, fail("malformed manifest: %s[%d] has no type", kind, i)
			}
			if e.Count != nil && *e.Count < 0 {
				return nil, fail("malformed manifest: %s[%d].count is negative", kind, i)
			}
		}
	}
	return &m, nil
}

// job is one file to download.
type job struct {
	kind  string // output, error, deleted
	entry Entry
	name  string // path under OutDir
	// refreshed: entry.URL is a fresh link from a new poll (refresh.go).
	refreshed bool
}

// plan names the files: <Type>.<n>.ndjson for output, error/… and deleted/…
func plan(m *Manifest) []job {
	var jobs []job
	for _, g := range []struct {
		kind, dir string
		list      []Entry
	}{{"output", "", m.Output}, {"error", "error/", m.Error}, {"deleted", "deleted/", m.Deleted}} {
		n := map[string]int{}
		for _, e := range g.list {
			base := safeName(e.Type)
			if e.Type == "" && m.OutputOrganizedBy != "" {
				base = safeName(m.OutputOrganizedBy) + "-blocks" // blocks of every type
			}
			n[base]++
			jobs = append(jobs, job{kind: g.kind, entry: e, name: fmt.Sprintf("%s%s.%d.ndjson", g.dir, base, n[base])})
		}
	}
	return jobs
}

// safeName keeps a server-supplied type from escaping the output directory.
func safeName(t string) string {
	out := []rune{}
	for _, r := range t {
		if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return "unknown"
	}
	return string(out)
}

// ManifestFile is a file of a manifest with the name the client gives it
// in its sink.
type ManifestFile struct {
	Name  string
	Kind  string // output, error or deleted
	Type  string // "" for the output files of an organized export
	Count *int64
	// ContinuesURL is the item's continuesInFile (organized output), and
	// ContinuesIn the name of the listed file it points at ("" if none).
	ContinuesURL, ContinuesIn string
}

// ManifestFiles validates a manifest and names its files as Run does.
func ManifestFiles(raw []byte) ([]ManifestFile, error) {
	m, err := parseManifest(raw)
	if err != nil {
		return nil, err
	}
	jobs := plan(m)
	names := map[string]string{} // output URL without its query → name
	for _, j := range jobs {
		if j.kind == "output" {
			names[urlKey(j.entry.URL)] = j.name
		}
	}
	var out []ManifestFile
	for _, j := range jobs {
		f := ManifestFile{Name: j.name, Kind: j.kind, Type: j.entry.Type, Count: j.entry.Count, ContinuesURL: j.entry.ContinuesInFile}
		if f.ContinuesURL != "" {
			f.ContinuesIn = names[urlKey(f.ContinuesURL)]
		}
		out = append(out, f)
	}
	return out, nil
}
