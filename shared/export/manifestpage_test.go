package export_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// pageFixture is a running job that allows partial manifests, whose files
// and unit progress a test sets by hand.
type pageFixture struct {
	jobs *exporttest.JobStore
	svc  *export.Service
	id   string
}

func newPageFixture(t *testing.T, pageSize int, groups []export.UnitGroup) *pageFixture {
	t.Helper()
	ctx := context.Background()
	f := &pageFixture{jobs: exporttest.NewJobStore(), id: "job1"}
	f.svc = export.NewService(f.jobs, exporttest.NewFileStore(), &nopRunner{}, &exporttest.Source{},
		export.Config{ManifestPageSize: pageSize}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	f.svc.SetClock(func() time.Time { return now })
	units := 0
	for _, g := range groups {
		units += g.Units
	}
	if err := f.jobs.Create(ctx, &export.Job{ID: f.id, Owner: "c", Status: export.StatusAccepted, TransactionTime: now,
		ExpiresAt: now.Add(time.Hour),
		Request:   bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, AllowPartialManifests: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.jobs.Transition(ctx, f.id, export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress,
		Plan: &export.PlanRef{Key: export.PlanKey(f.id), Units: units, Groups: groups}}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *pageFixture) files(t *testing.T, unit string, n int) {
	t.Helper()
	typ, _, _ := strings.Cut(unit, ".")
	for i := 0; i < n; i++ {
		if err := f.jobs.PutFile(context.Background(), f.id, export.File{Key: export.FileKey(f.id, unit, typ, i),
			Kind: export.KindOutput, Type: typ, Count: 1, Bytes: 10, Unit: unit, Seq: i}); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *pageFixture) done(t *testing.T, units ...string) {
	t.Helper()
	for _, u := range units {
		if err := f.jobs.SaveProgress(context.Background(), f.id, u, export.UnitProgress{Done: true}); err != nil {
			t.Fatal(err)
		}
	}
}

// page returns the file keys of the page after cursor and its next cursor;
// served is false when the status carries no manifest.
func (f *pageFixture) page(t *testing.T, cursor string) (keys []string, next string, served bool) {
	t.Helper()
	rep, err := f.svc.StatusPage(context.Background(), "c", f.id, cursor)
	if err != nil {
		t.Fatalf("page %q: %v", cursor, err)
	}
	if rep.Manifest == nil {
		return nil, "", false
	}
	for _, e := range rep.Manifest.Output {
		u, _, _ := strings.Cut(strings.TrimPrefix(e.URL, "https://files.test/"), "?")
		keys = append(keys, u)
	}
	return keys, rep.Next, true
}

func TestPartialManifestPagesAreStableAndCoverEveryFile(t *testing.T) {
	f := newPageFixture(t, 4, []export.UnitGroup{{Name: "Observation", Units: 3}, {Name: "Patient", Units: 2}})
	key := func(unit string, seq int) string {
		typ, _, _ := strings.Cut(unit, ".")
		return export.FileKey(f.id, unit, typ, seq)
	}
	f.files(t, "Observation.0000", 3)
	f.files(t, "Patient.0000", 5)
	f.done(t, "Observation.0000", "Patient.0000")

	// Three final files of an unfinished type: not a full page, not the
	// whole type, so no page yet (it could still grow).
	if keys, _, served := f.page(t, ""); served {
		t.Fatalf("first page served early: %v", keys)
	}

	f.files(t, "Observation.0001", 2)
	// A file of a unit still running is never listed (negative control of
	// the frontier: it would sort into the first page).
	if keys, _, served := f.page(t, ""); served {
		t.Fatalf("first page served with a running unit's files: %v", keys)
	}
	f.done(t, "Observation.0001")
	first, next, served := f.page(t, "")
	want := []string{key("Observation.0000", 0), key("Observation.0000", 1), key("Observation.0000", 2), key("Observation.0001", 0)}
	if !served || strings.Join(first, ",") != strings.Join(want, ",") {
		t.Fatalf("first page = %v (served %v), want %v", first, served, want)
	}
	if next != "" {
		t.Fatalf("next = %q while the second page can still grow", next)
	}

	f.files(t, "Observation.0002", 1)
	f.done(t, "Observation.0002")
	again, next, _ := f.page(t, "")
	if strings.Join(again, ",") != strings.Join(first, ",") {
		t.Fatalf("first page changed: %v, then %v", first, again)
	}
	if next == "" {
		t.Fatal("no next link once the Observation pages are final")
	}
	second, next2, served := f.page(t, next)
	if !served || strings.Join(second, ",") != key("Observation.0001", 1)+","+key("Observation.0002", 0) {
		t.Fatalf("second page = %v (served %v)", second, served)
	}
	third, next3, served := f.page(t, next2)
	if !served || len(third) != 4 || next3 != "" {
		t.Fatalf("third page = %v next %q (served %v), want 4 Patient files and no next yet", third, next3, served)
	}

	// Completion: the pages seen while running are unchanged, a last page
	// follows, and the union is every file exactly once.
	f.files(t, "Patient.0001", 2)
	f.done(t, "Patient.0001")
	if _, err := f.jobs.Transition(context.Background(), f.id, export.Transition{
		From: []export.Status{export.StatusInProgress}, To: export.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	cursor, pages := "", 0
	for {
		keys, next, served := f.page(t, cursor)
		if !served {
			t.Fatal("a page of a completed job was not served")
		}
		switch pages {
		case 0, 1, 2:
			if got, was := strings.Join(keys, ","), strings.Join([][]string{first, second, third}[pages], ","); got != was {
				t.Errorf("page %d changed at completion: %s, was %s", pages, got, was)
			}
		}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("%s listed twice", k)
			}
			seen[k] = true
		}
		pages++
		if next == "" {
			break
		}
		cursor = next
	}
	all, _ := f.jobs.Files(context.Background(), f.id)
	if len(seen) != len(all) || len(all) != 13 {
		t.Errorf("pages list %d files, the job has %d (want 13)", len(seen), len(all))
	}
	if pages != 4 {
		t.Errorf("%d pages, want 4", pages)
	}
}

func TestPageCursorOfAnUnpagedExportIsRefused(t *testing.T) {
	f := newPageFixture(t, 4, []export.UnitGroup{{Name: "Patient", Units: 1}})
	ctx := context.Background()
	if _, err := f.svc.StatusPage(ctx, "c", f.id, "bad cursor"); err != export.ErrBadPage {
		t.Errorf("cursor with a space: %v, want ErrBadPage", err)
	}
	j, _ := f.jobs.Get(ctx, f.id)
	j.ID = "job2"
	j.Status = export.StatusAccepted
	j.Request.AllowPartialManifests = false
	if err := f.jobs.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.StatusPage(ctx, "c", "job2", "Patient.0000/Patient.0000.ndjson"); err != export.ErrBadPage {
		t.Errorf("cursor on an unpaged export: %v, want ErrBadPage", err)
	}
}

func TestFilesAfterPagesInKeyOrder(t *testing.T) {
	var all []export.File
	for _, k := range []string{"j/b", "j/a", "j/c", "j/d"} {
		all = append(all, export.File{Key: k})
	}
	for _, tc := range []struct {
		after string
		limit int
		want  string
	}{
		{"", 2, "j/a,j/b"},
		{"j/a", 2, "j/b,j/c"},
		{"j/aa", 10, "j/b,j/c,j/d"},
		{"j/d", 10, ""},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.after, tc.limit), func(t *testing.T) {
			var got []string
			for _, f := range export.FilesAfter(all, tc.after, tc.limit) {
				got = append(got, f.Key)
			}
			if strings.Join(got, ",") != tc.want {
				t.Errorf("got %v, want %s", got, tc.want)
			}
		})
	}
}

// TestAHundredThousandFilesInPages: a completed job of 100,000 files is
// served in pages of 1,000, each file once, every page read from the
// store's pagination.
func TestAHundredThousandFilesInPages(t *testing.T) {
	const units, perUnit = 100, 1000
	f := newPageFixture(t, export.DefaultManifestPageSize, []export.UnitGroup{{Name: "Observation", Units: units}})
	ctx := context.Background()
	for u := 0; u < units; u++ {
		f.files(t, export.UnitID("Observation", u), perUnit)
		f.done(t, export.UnitID("Observation", u))
	}
	if _, err := f.jobs.Transition(ctx, f.id, export.Transition{From: []export.Status{export.StatusInProgress}, To: export.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	pages := 0
	for cursor := ""; ; pages++ {
		keys, next, served := f.page(t, cursor)
		if !served || len(keys) != export.DefaultManifestPageSize {
			t.Fatalf("page %d: %d files (served %v), want %d", pages, len(keys), served, export.DefaultManifestPageSize)
		}
		for _, k := range keys {
			if seen[k] {
				t.Fatalf("%s listed twice", k)
			}
			seen[k] = true
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if pages+1 != units*perUnit/export.DefaultManifestPageSize || len(seen) != units*perUnit {
		t.Errorf("%d pages, %d files; want %d pages of all %d", pages+1, len(seen), units*perUnit/export.DefaultManifestPageSize, units*perUnit)
	}
}

// keyLinks links a file to base + its key.
type keyLinks string

func (b keyLinks) URL(_ context.Context, key string, _ time.Time) (string, error) {
	return string(b) + key, nil
}

// TestManifestLinkedBy: the unpaged manifest relinked (the API's download
// route, for a manifest too large with signed links) lists the same files
// in the same order with the other links; a paged or running export has
// no whole manifest to relink.
func TestManifestLinkedBy(t *testing.T) {
	ctx := context.Background()
	jobs := exporttest.NewJobStore()
	svc := export.NewService(jobs, exporttest.NewFileStore(), &nopRunner{}, &exporttest.Source{}, export.Config{},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now().UTC()
	newJob := func(id string, paged, complete bool) {
		t.Helper()
		if err := jobs.Create(ctx, &export.Job{ID: id, Owner: "c", Status: export.StatusAccepted, TransactionTime: now, ExpiresAt: now.Add(time.Hour),
			Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, AllowPartialManifests: paged}}); err != nil {
			t.Fatal(err)
		}
		if _, err := jobs.Transition(ctx, id, export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress,
			Plan: &export.PlanRef{Key: export.PlanKey(id), Units: 2, Groups: []export.UnitGroup{{Name: "Observation", Units: 1}, {Name: "Patient", Units: 1}}}}); err != nil {
			t.Fatal(err)
		}
		for i, f := range []export.File{
			{Type: "Patient", Unit: "Patient.0000", Kind: export.KindOutput, Count: 3},
			{Type: "Observation", Unit: "Observation.0000", Kind: export.KindOutput, Count: 5},
			{Type: "Observation", Unit: "Observation.0000", Kind: export.KindOutput, Count: 2, Seq: 1},
			{Type: "OperationOutcome", Unit: "Observation.0000", Kind: export.KindError, Count: 1},
			{Type: "Patient", Unit: "Patient.0000", Kind: export.KindOutput, Count: 0, Seq: 1},
		} {
			f.Key, f.Bytes = export.FileKey(id, f.Unit, f.Type, f.Seq+i*10), 10
			if err := jobs.PutFile(ctx, id, f); err != nil {
				t.Fatal(err)
			}
		}
		if complete {
			done := now
			if _, err := jobs.Transition(ctx, id, export.Transition{From: []export.Status{export.StatusInProgress}, To: export.StatusCompleted, CompletedAt: &done}); err != nil {
				t.Fatal(err)
			}
		}
	}
	newJob("whole", false, true)
	rep, err := svc.Status(ctx, "c", "whole")
	if err != nil {
		t.Fatal(err)
	}
	m, err := svc.ManifestLinkedBy(ctx, rep, keyLinks("https://api.test/fhir/bulkfiles/"))
	if err != nil {
		t.Fatal(err)
	}
	same := func(a, b []bulkdata.ManifestFile) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			key, ok := strings.CutPrefix(b[i].URL, "https://api.test/fhir/bulkfiles/")
			if !ok || !strings.Contains(a[i].URL, key) || a[i].Type != b[i].Type || *a[i].Count != *b[i].Count || *a[i].FileSize != *b[i].FileSize {
				return false
			}
		}
		return true
	}
	if len(m.Output) != 3 || !same(rep.Manifest.Output, m.Output) || !same(rep.Manifest.Error, m.Error) || len(m.Error) != 1 {
		t.Errorf("relinked manifest\n%+v\nwant the files of\n%+v", m, rep.Manifest)
	}
	if m.TransactionTime != rep.Manifest.TransactionTime || m.Request != rep.Manifest.Request {
		t.Errorf("relinked manifest fields differ")
	}
	for name, id := range map[string]string{"paged": "paged", "running": "running"} {
		newJob(id, name == "paged", name == "paged")
		rep, err := svc.Status(ctx, "c", id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.ManifestLinkedBy(ctx, rep, keyLinks("x/")); err == nil {
			t.Errorf("%s export relinked, want an error", name)
		}
	}
}
