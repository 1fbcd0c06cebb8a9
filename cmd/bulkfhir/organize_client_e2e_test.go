package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// organizedFolder reads the resources of an organized export folder by
// "Type/id", block headers left out, and the manifest as received.
func organizedFolder(t *testing.T, out string) (map[string][]byte, map[string]any) {
	t.Helper()
	var m map[string]any
	raw, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil || json.Unmarshal(raw, &m) != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	got := map[string][]byte{}
	names, _ := filepath.Glob(filepath.Join(out, "Patient-blocks.*.ndjson"))
	for _, name := range names {
		b, _ := os.ReadFile(name)
		for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
			if h, ok := fhir.Peek(line); ok && h.ResourceType != "Parameters" {
				got[h.ResourceType+"/"+h.ID] = line
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("no Patient-blocks files in %s", out)
	}
	return got, m
}

// TestExportOrganizeOutputBy: bulkfhir export --organize-output-by Patient
// against bulkfhir serve sends the parameter, downloads the files of blocks
// (split blocks too: files roll at 30,000 bytes), checks them, and verify
// --data finds exactly the request's resources, each in the block it
// belongs to. Tampered folders are caught: a resource moved into another
// patient's block, a broken continuesInFile chain, a block of a patient
// outside the Group.
func TestExportOrganizeOutputBy(t *testing.T) {
	src := sourceResources(t, dataDir)
	s := startServer(t, dataDir, "--max-file-bytes", "30000")
	members := groupMembers(t, src, "care-team-a")
	var two []string
	for p := range members {
		if two = append(two, p); len(two) == 2 {
			break
		}
	}
	chosen := map[string]bool{two[0]: true, two[1]: true}
	typed := map[string][]byte{}
	for key, line := range expectedCompartment(src, members) {
		if strings.HasPrefix(key, "Patient/") || strings.HasPrefix(key, "Condition/") {
			typed[key] = line
		}
	}
	outs := map[string]string{} // in the test's folder: a subtest's TempDir goes when it ends
	root := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want map[string][]byte
	}{
		{"group", []string{"--group", "care-team-a"}, expectedCompartment(src, members)},
		{"group, partial manifests", []string{"--group", "care-team-a", "--allow-partial-manifests"}, expectedCompartment(src, members)},
		{"group, two types", []string{"--group", "care-team-a", "--type", "Patient,Condition"}, typed},
		{"two patients (POST)", []string{"--patient", two[0], "--patient", two[1]}, expectedCompartment(src, chosen)},
		// A quarter of the patients were updated after _until: they still
		// head the blocks of their older Observations (verify --data).
		{"system, _until", []string{"--type", "Patient,Observation", "--until", "2025-06-01T00:00:00Z"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(root, strings.NewReplacer(" ", "-", ",", "", "(", "", ")", "").Replace(tc.name))
			outs[tc.name] = out
			mustExport(t, append([]string{"--server", s.base, "--out", out, "--organize-output-by", "Patient"}, tc.args...)...)
			got, m := organizedFolder(t, out)
			if m["outputOrganizedBy"] != "Patient" {
				t.Errorf("outputOrganizedBy = %v, want Patient", m["outputOrganizedBy"])
			}
			if tc.want != nil {
				sameSet(t, got, tc.want)
			}
			stdout, stderr, code := runCLI(t, "verify", "--out", out, "--data", dataDir)
			if code != 0 || !strings.Contains(stdout, "blocks by Patient") || !strings.Contains(stdout, "verified:") {
				t.Errorf("verify --data: status %d\n%s%s", code, stdout, stderr)
			}
		})
	}

	out := outs["group"]
	raw, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if !bytes.Contains(raw, []byte("continuesInFile")) {
		t.Fatal("no block was split at 30,000 bytes: the chain checks below would test nothing")
	}
	t.Run("resume keeps the complete files of blocks", func(t *testing.T) {
		// Their counts leave the block headers out, so a line count alone
		// would take every file for incomplete and fetch it again.
		stdout := mustExport(t, "--server", s.base, "--out", out, "--group", "care-team-a", "--organize-output-by", "Patient", "--resume")
		if n := bytes.Count(raw, []byte(`"url"`)); !strings.Contains(stdout, fmt.Sprintf("%d files already complete were kept", n)) {
			t.Errorf("--resume of a complete organized export did not keep its %d files:\n%s", n, stdout)
		}
	})
	t.Run("resume with another organization is refused", func(t *testing.T) {
		_, stderr, code := runCLI(t, "export", "--server", s.base, "--out", out, "--group", "care-team-a", "--resume")
		if code != 2 || !strings.Contains(stderr, `"organizeOutputBy":"Patient"`) {
			t.Errorf("--resume without --organize-output-by: status %d, %q; want 2 naming the recorded request", code, stderr)
		}
	})

	// Negative controls, each on a copy of the group export's folder.
	blocksOf := func(t *testing.T, dir string) (files []string, lines [][][]byte) {
		names, _ := filepath.Glob(filepath.Join(dir, "Patient-blocks.*.ndjson"))
		for _, n := range names {
			b, _ := os.ReadFile(n)
			files = append(files, n)
			lines = append(lines, bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")))
		}
		return files, lines
	}
	write := func(name string, lines [][]byte) {
		os.WriteFile(name, append(bytes.Join(lines, []byte("\n")), '\n'), 0o644)
	}
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, dir string)
		data   bool
		want   string
	}{
		{"a resource moved into another patient's block", func(t *testing.T, dir string) {
			files, lines := blocksOf(t, dir)
			// A block's last resource goes after the next block's header:
			// it is not in that patient's compartment.
			for n, f := range lines {
				for i := 2; i < len(f); i++ {
					if !bytes.Contains(f[i], []byte(`"name":"header"`)) || bytes.Contains(f[i-1], []byte(`"name":"header"`)) {
						continue
					}
					if h, _ := fhir.Peek(f[i-1]); h.ResourceType == "Patient" {
						continue
					}
					f[i-1], f[i] = f[i], f[i-1]
					write(files[n], f)
					return
				}
			}
			t.Fatal("no file has a second block after a resource")
		}, false, "outside that patient's compartment"},
		{"a broken continuesInFile chain", func(t *testing.T, dir string) {
			mp := filepath.Join(dir, "manifest.json")
			var m map[string]any
			raw, _ := os.ReadFile(mp)
			json.Unmarshal(raw, &m)
			for _, o := range m["output"].([]any) {
				if item := o.(map[string]any); item["continuesInFile"] != nil {
					delete(item, "continuesInFile")
					break
				}
			}
			raw, _ = json.Marshal(m)
			os.WriteFile(mp, raw, 0o644)
		}, false, "that no continuesInFile joins"},
		{"a block of a patient outside the Group", func(t *testing.T, dir string) {
			files, lines := blocksOf(t, dir)
			var outsider string
			for key := range src {
				if typ, id, _ := strings.Cut(key, "/"); typ == "Patient" && !members[id] {
					outsider = id
					break
				}
			}
			last := len(files) - 1
			hdr := fmt.Appendf(nil, `{"resourceType":"Parameters","parameter":[{"name":"header","valueReference":{"reference":"Patient/%s"}}]}`, outsider)
			write(files[last], append(lines[last], hdr, src["Patient/"+outsider]))
		}, true, "not one of the export's patients"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(out)); err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, dir)
			args := []string{"verify", "--out", dir}
			if tc.data {
				args = append(args, "--data", dataDir)
			}
			stdout, _, code := runCLI(t, args...)
			if code == 0 || !strings.Contains(stdout, tc.want) {
				t.Errorf("verify of a tampered folder: status %d, want non-zero and a problem saying %q:\n%s", code, tc.want, stdout)
			}
		})
	}
}

// TestExportChecksTheBlocksItGets: a server whose organized files break
// the rules (a resource in another patient's block, a type not asked for)
// makes bulkfhir export exit 3 with each problem on stderr; the download
// alone cannot see it, since files of blocks hold every type.
func TestExportChecksTheBlocksItGets(t *testing.T) {
	const hdr = `{"resourceType":"Parameters","parameter":[{"name":"header","valueReference":{"reference":"Patient/p1"}}]}`
	for _, tc := range []struct {
		name, body string
		args       []string
		code       int
		want       string
	}{
		{"well-formed", hdr + "\n" + `{"resourceType":"Patient","id":"p1"}` + "\n" + `{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"}}` + "\n",
			nil, 0, ""},
		{"another patient's resource", hdr + "\n" + `{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p2"}}` + "\n",
			nil, 3, "outside that patient's compartment"},
		{"a type not asked for", hdr + "\n" + `{"resourceType":"Patient","id":"p1"}` + "\n" + `{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"}}` + "\n",
			[]string{"--type", "Patient"}, 3, "a Condition, a type the export did not ask for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var query string
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/fhir/$export":
					query = r.URL.RawQuery
					w.Header().Set("Content-Location", srv.URL+"/fhir/status")
					w.WriteHeader(http.StatusAccepted)
				case "/fhir/status":
					w.Header().Set("Content-Type", "application/json")
					fmt.Fprintf(w, `{"transactionTime":"2026-01-01T00:00:00Z","request":"x","requiresAccessToken":false,"outputOrganizedBy":"Patient",
						"output":[{"url":"%s/files/1.ndjson","count":%d}],"error":[]}`, srv.URL, strings.Count(tc.body, "\n")-1)
				case "/files/1.ndjson":
					w.Header().Set("Content-Type", "application/fhir+ndjson")
					fmt.Fprint(w, tc.body)
				default:
					http.NotFound(w, r)
				}
			}))
			t.Cleanup(srv.Close)
			args := append([]string{"export", "--server", srv.URL + "/fhir", "--out", t.TempDir(), "--organize-output-by", "Patient"}, tc.args...)
			stdout, stderr, code := runCLI(t, args...)
			if !strings.Contains(query, "organizeOutputBy=Patient") {
				t.Errorf("kick-off query %q has no organizeOutputBy=Patient", query)
			}
			if code != tc.code || !strings.Contains(stderr, tc.want) || (tc.want != "" && !strings.Contains(stderr, "PROBLEM")) {
				t.Errorf("status %d, want %d with %q on stderr:\n%s%s", code, tc.code, tc.want, stdout, stderr)
			}
		})
	}
}
