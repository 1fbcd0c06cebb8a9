// Package sampledata generates deterministic, realistic FHIR R4 sample data as
// NDJSON: patients with encounters, observations, conditions, procedures,
// medication requests, immunizations, allergies, diagnostic reports and
// documents, plus the practitioners, organizations and locations they
// reference, and several Groups. The same (patients, seed) always gives the
// same bytes. meta.lastUpdated spreads over the two years before End.
package sampledata

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// End is the default end of the generated timeline (fixed, so output is
// reproducible and entirely in the past).
var End = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Options control generation.
type Options struct {
	Patients int
	Seed     uint64
	// End is the latest meta.lastUpdated; zero means sampledata.End.
	End time.Time
}

// GroupIDs are the ids of the generated Groups.
var GroupIDs = []string{"small-cohort", "even-cohort", "diabetes-registry", "care-team-a"}

type writers struct {
	dir   string
	files map[string]*os.File
	bufs  map[string]*bufio.Writer
	count map[string]int
}

func (w *writers) put(t string, b []byte) error {
	bw := w.bufs[t]
	if bw == nil {
		f, err := os.Create(filepath.Join(w.dir, t+".ndjson"))
		if err != nil {
			return err
		}
		w.files[t] = f
		bw = bufio.NewWriterSize(f, 1<<20)
		w.bufs[t] = bw
	}
	w.count[t]++
	bw.Write(b)
	return bw.WriteByte('\n')
}

func (w *writers) close() error {
	var first error
	for t, bw := range w.bufs {
		if err := bw.Flush(); err != nil && first == nil {
			first = err
		}
		if err := w.files[t].Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Generate writes DIR/<Type>.ndjson and returns the resources per type.
func Generate(dir string, opts Options) (map[string]int, error) {
	if opts.Patients < 1 {
		return nil, fmt.Errorf("generate: need at least one patient")
	}
	if opts.End.IsZero() {
		opts.End = End
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	w := &writers{dir: dir, files: map[string]*os.File{}, bufs: map[string]*bufio.Writer{}, count: map[string]int{}}
	g := newGen(opts)
	err := g.run(w)
	if cerr := w.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return w.count, nil
}

type gen struct {
	opts        Options
	start       time.Time
	span        time.Duration
	orgs, pracs []string
	locs        []string
	patients    []string
	diabetic    []bool
	rng         *rand.Rand
}

func newGen(opts Options) *gen {
	g := &gen{opts: opts, start: opts.End.Add(-2 * 365 * 24 * time.Hour)}
	g.span = opts.End.Sub(g.start)
	g.rng = rand.New(rand.NewPCG(opts.Seed, 0x5eed))
	return g
}

// uuid makes a deterministic version-4-shaped id from r.
func uuid(r *rand.Rand) string {
	a, b := r.Uint64(), r.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xfff, 0x8000|(b>>48)&0x3fff, b&0xffffffffffff)
}

func (g *gen) when(r *rand.Rand) time.Time {
	return g.start.Add(time.Duration(r.Int64N(int64(g.span)))).Truncate(time.Millisecond)
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (g *gen) run(w *writers) error {
	n := g.opts.Patients
	nOrg := max(3, n/50)
	nPrac := max(5, n/10)
	for i := 0; i < nOrg; i++ {
		id := uuid(g.rng)
		g.orgs = append(g.orgs, id)
		name := fmt.Sprintf("%s %s", pick(g.rng, orgPrefixes), pick(g.rng, orgKinds))
		if err := w.put("Organization", fmt.Appendf(nil,
			`{"resourceType":"Organization","id":%q,"meta":{"lastUpdated":%q},"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"%010d"}],"active":true,"type":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/organization-type","code":"prov","display":"Healthcare Provider"}]}],"name":%q,"telecom":[{"system":"phone","value":"555-%04d"}],"address":[{"line":["%d Main St"],"city":%q,"state":"MA","postalCode":"0%04d"}]}`,
			id, ts(g.when(g.rng)), 1000000000+g.rng.IntN(999999999), name, g.rng.IntN(10000), 1+g.rng.IntN(999), pick(g.rng, cities), g.rng.IntN(10000))); err != nil {
			return err
		}
		for j := 0; j < 2; j++ {
			lid := uuid(g.rng)
			g.locs = append(g.locs, lid)
			if err := w.put("Location", fmt.Appendf(nil,
				`{"resourceType":"Location","id":%q,"meta":{"lastUpdated":%q},"status":"active","name":"%s %s","mode":"instance","type":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-RoleCode","code":%q}]}],"managingOrganization":{"reference":"Organization/%s"}}`,
				lid, ts(g.when(g.rng)), name, pick(g.rng, wards), pick(g.rng, roleCodes), id)); err != nil {
				return err
			}
		}
	}
	for i := 0; i < nPrac; i++ {
		id := uuid(g.rng)
		g.pracs = append(g.pracs, id)
		if err := w.put("Practitioner", fmt.Appendf(nil,
			`{"resourceType":"Practitioner","id":%q,"meta":{"lastUpdated":%q},"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"%010d"}],"active":true,"name":[{"family":%q,"given":[%q],"prefix":["Dr."]}],"gender":%q}`,
			id, ts(g.when(g.rng)), 1000000000+g.rng.IntN(999999999), pick(g.rng, families), pick(g.rng, givens), pick(g.rng, genders))); err != nil {
			return err
		}
	}
	for p := 0; p < n; p++ {
		if err := g.patient(w, p); err != nil {
			return err
		}
	}
	return g.groups(w)
}

func (g *gen) patient(w *writers, p int) error {
	r := rand.New(rand.NewPCG(g.opts.Seed, uint64(p)+1))
	pid := uuid(r)
	g.patients = append(g.patients, pid)
	gender := pick(r, genders)
	birth := time.Date(1930+r.IntN(90), time.Month(1+r.IntN(12)), 1+r.IntN(28), 0, 0, 0, 0, time.UTC)
	org := g.orgs[r.IntN(len(g.orgs))]
	gp := g.pracs[r.IntN(len(g.pracs))]
	if err := w.put("Patient", fmt.Appendf(nil,
		`{"resourceType":"Patient","id":%q,"meta":{"lastUpdated":%q},"identifier":[{"system":"urn:oid:1.2.36.146.595.217.0.1","value":"MRN%08d"}],"active":true,"name":[{"use":"official","family":%q,"given":[%q]}],"telecom":[{"system":"phone","value":"555-%04d","use":"home"}],"gender":%q,"birthDate":%q,"address":[{"line":["%d %s St"],"city":%q,"state":"MA","postalCode":"0%04d"}],"generalPractitioner":[{"reference":"Practitioner/%s"}],"managingOrganization":{"reference":"Organization/%s"}}`,
		pid, ts(g.when(r)), p+1, pick(r, families), pick(r, givens), r.IntN(10000), gender, birth.Format("2006-01-02"),
		1+r.IntN(999), pick(r, streets), pick(r, cities), r.IntN(10000), gp, org)); err != nil {
		return err
	}
	subj := "Patient/" + pid
	// Conditions.
	diabetic := r.IntN(4) == 0
	g.diabetic = append(g.diabetic, diabetic)
	nCond := 2 + r.IntN(5)
	for i := 0; i < nCond; i++ {
		c := conditions[r.IntN(len(conditions))]
		if i == 0 && diabetic {
			c = conditions[0]
		}
		onset := g.when(r)
		if err := w.put("Condition", fmt.Appendf(nil,
			`{"resourceType":"Condition","id":%q,"meta":{"lastUpdated":%q},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"confirmed"}]},"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-category","code":"problem-list-item"}]}],"code":{"coding":[{"system":"http://snomed.info/sct","code":%q,"display":%q}],"text":%q},"subject":{"reference":%q},"onsetDateTime":%q,"recordedDate":%q,"asserter":{"reference":"Practitioner/%s"}}`,
			uuid(r), ts(onset), c[0], c[1], c[1], subj, ts(onset), ts(onset), gp)); err != nil {
			return err
		}
	}
	// Allergies, immunizations, documents.
	for i, nA := 0, r.IntN(3); i < nA; i++ {
		a := allergies[r.IntN(len(allergies))]
		if err := w.put("AllergyIntolerance", fmt.Appendf(nil,
			`{"resourceType":"AllergyIntolerance","id":%q,"meta":{"lastUpdated":%q},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical","code":"active"}]},"type":"allergy","category":[%q],"criticality":"low","code":{"coding":[{"system":"http://snomed.info/sct","code":%q,"display":%q}]},"patient":{"reference":%q},"recorder":{"reference":"Practitioner/%s"}}`,
			uuid(r), ts(g.when(r)), a[2], a[0], a[1], subj, gp)); err != nil {
			return err
		}
	}
	for i, nI := 0, 2+r.IntN(5); i < nI; i++ {
		v := vaccines[r.IntN(len(vaccines))]
		t := g.when(r)
		if err := w.put("Immunization", fmt.Appendf(nil,
			`{"resourceType":"Immunization","id":%q,"meta":{"lastUpdated":%q},"status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":%q,"display":%q}]},"patient":{"reference":%q},"occurrenceDateTime":%q,"primarySource":true,"location":{"reference":"Location/%s"},"performer":[{"actor":{"reference":"Practitioner/%s"}}]}`,
			uuid(r), ts(t), v[0], v[1], subj, ts(t), g.locs[r.IntN(len(g.locs))], g.pracs[r.IntN(len(g.pracs))])); err != nil {
			return err
		}
	}
	// Encounters with their observations, procedures, reports and orders.
	for e, nE := 0, 8+r.IntN(13); e < nE; e++ {
		eid := uuid(r)
		t := g.when(r)
		prac := g.pracs[r.IntN(len(g.pracs))]
		loc := g.locs[r.IntN(len(g.locs))]
		cls := encounterClasses[r.IntN(len(encounterClasses))]
		if err := w.put("Encounter", fmt.Appendf(nil,
			`{"resourceType":"Encounter","id":%q,"meta":{"lastUpdated":%q},"status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":%q,"display":%q},"type":[{"coding":[{"system":"http://snomed.info/sct","code":"185349003","display":"Encounter for check up"}]}],"subject":{"reference":%q},"participant":[{"individual":{"reference":"Practitioner/%s"}}],"period":{"start":%q,"end":%q},"location":[{"location":{"reference":"Location/%s"}}],"serviceProvider":{"reference":"Organization/%s"}}`,
			eid, ts(t), cls[0], cls[1], subj, prac, ts(t), ts(t.Add(30*time.Minute)), loc, org)); err != nil {
			return err
		}
		enc := "Encounter/" + eid
		var obsIDs []string
		for o, nO := 0, 5+r.IntN(8); o < nO; o++ {
			oid := uuid(r)
			obsIDs = append(obsIDs, oid)
			ot := t.Add(time.Duration(o) * time.Minute)
			c := observations[r.IntN(len(observations))]
			val := c.lo + r.Float64()*(c.hi-c.lo)
			if err := w.put("Observation", fmt.Appendf(nil,
				`{"resourceType":"Observation","id":%q,"meta":{"lastUpdated":%q},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":%q}]}],"code":{"coding":[{"system":"http://loinc.org","code":%q,"display":%q}],"text":%q},"subject":{"reference":%q},"encounter":{"reference":%q},"effectiveDateTime":%q,"issued":%q,"performer":[{"reference":"Practitioner/%s"}],"valueQuantity":{"value":%.1f,"unit":%q,"system":"http://unitsofmeasure.org","code":%q}}`,
				oid, ts(ot), c.category, c.code, c.display, c.display, subj, enc, ts(ot), ts(ot), prac, val, c.unit, c.unit)); err != nil {
				return err
			}
		}
		if r.IntN(2) == 0 {
			pr := procedures[r.IntN(len(procedures))]
			if err := w.put("Procedure", fmt.Appendf(nil,
				`{"resourceType":"Procedure","id":%q,"meta":{"lastUpdated":%q},"status":"completed","code":{"coding":[{"system":"http://snomed.info/sct","code":%q,"display":%q}]},"subject":{"reference":%q},"encounter":{"reference":%q},"performedDateTime":%q,"performer":[{"actor":{"reference":"Practitioner/%s"}}],"location":{"reference":"Location/%s"}}`,
				uuid(r), ts(t.Add(time.Hour)), pr[0], pr[1], subj, enc, ts(t), prac, loc)); err != nil {
				return err
			}
		}
		if r.IntN(2) == 0 {
			results := ""
			for i, id := range obsIDs[:min(3, len(obsIDs))] {
				if i > 0 {
					results += ","
				}
				results += `{"reference":"Observation/` + id + `"}`
			}
			if err := w.put("DiagnosticReport", fmt.Appendf(nil,
				`{"resourceType":"DiagnosticReport","id":%q,"meta":{"lastUpdated":%q},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0074","code":"LAB"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"24323-8","display":"Comprehensive metabolic panel"}]},"subject":{"reference":%q},"encounter":{"reference":%q},"effectiveDateTime":%q,"issued":%q,"performer":[{"reference":"Organization/%s"}],"result":[%s]}`,
				uuid(r), ts(t.Add(2*time.Hour)), subj, enc, ts(t), ts(t.Add(2*time.Hour)), org, results)); err != nil {
				return err
			}
		}
		if r.IntN(5) < 3 {
			m := medications[r.IntN(len(medications))]
			if err := w.put("MedicationRequest", fmt.Appendf(nil,
				`{"resourceType":"MedicationRequest","id":%q,"meta":{"lastUpdated":%q},"status":%q,"intent":"order","medicationCodeableConcept":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":%q,"display":%q}]},"subject":{"reference":%q},"encounter":{"reference":%q},"authoredOn":%q,"requester":{"reference":"Practitioner/%s"},"dosageInstruction":[{"text":"Take one tablet daily"}]}`,
				uuid(r), ts(t.Add(90*time.Minute)), pick(r, medStatuses), m[0], m[1], subj, enc, ts(t), prac)); err != nil {
				return err
			}
		}
		if r.IntN(6) == 0 {
			note := fmt.Sprintf("Visit note: patient seen for %s. Plan discussed.", cls[1])
			if err := w.put("DocumentReference", fmt.Appendf(nil,
				`{"resourceType":"DocumentReference","id":%q,"meta":{"lastUpdated":%q},"status":"current","type":{"coding":[{"system":"http://loinc.org","code":"11506-3","display":"Progress note"}]},"category":[{"coding":[{"system":"http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category","code":"clinical-note"}]}],"subject":{"reference":%q},"date":%q,"author":[{"reference":"Practitioner/%s"}],"content":[{"attachment":{"contentType":"text/plain","language":"en-US","data":%q,"title":"Progress note","creation":%q}}],"context":{"encounter":[{"reference":%q}]}}`,
				uuid(r), ts(t.Add(3*time.Hour)), subj, ts(t), prac, b64(note), ts(t), enc)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g *gen) groups(w *writers) error {
	members := map[string][]int{}
	inactive := map[string]int{}
	for i := range g.patients {
		if i < 5 {
			members["small-cohort"] = append(members["small-cohort"], i)
		}
		if i%2 == 0 {
			members["even-cohort"] = append(members["even-cohort"], i)
		}
		if g.diabetic[i] {
			members["diabetes-registry"] = append(members["diabetes-registry"], i)
		}
		if i%7 == 3 {
			members["care-team-a"] = append(members["care-team-a"], i)
		}
	}
	// One inactive member: a former member whose data must not be exported.
	if len(g.patients) > 1 {
		inactive["care-team-a"] = 1
	}
	names := map[string]string{
		"small-cohort": "Small cohort", "even-cohort": "Even cohort",
		"diabetes-registry": "Diabetes registry", "care-team-a": "Care team A",
	}
	ids := append([]string(nil), GroupIDs...)
	sort.Strings(ids)
	for _, id := range ids {
		var b []byte
		b = fmt.Appendf(b, `{"resourceType":"Group","id":%q,"meta":{"lastUpdated":%q},"identifier":[{"system":"https://bulkfhir.example/groups","value":%q}],"active":true,"type":"person","actual":true,"name":%q,"quantity":%d,"managingEntity":{"reference":"Organization/%s"},"member":[`,
			id, ts(g.when(g.rng)), id, names[id], len(members[id]), g.orgs[0])
		first := true
		for _, i := range members[id] {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = fmt.Appendf(b, `{"entity":{"reference":"Patient/%s"}}`, g.patients[i])
		}
		if i, ok := inactive[id]; ok && !contains(members[id], i) {
			if !first {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `{"entity":{"reference":"Patient/%s"},"inactive":true}`, g.patients[i])
		}
		b = append(b, "]}"...)
		if err := w.put("Group", b); err != nil {
			return err
		}
	}
	return nil
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func pick(r *rand.Rand, list []string) string { return list[r.IntN(len(list))] }
