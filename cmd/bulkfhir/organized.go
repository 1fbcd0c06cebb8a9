package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
)

// verifyOrganized checks the files of a downloaded export whose manifest is
// organized by Patient, as verify does. The download checks each line of a
// file of one type against that type; files of blocks hold every type, so
// their rules (headers, blocks, compartments, continuesInFile chains, the
// types and patients asked for) are checked here, once every file is in.
// It returns false when the manifest is not organized.
func verifyOrganized(ctx context.Context, sink bulkclient.Sink, o bulkclient.Options) (bool, []string, error) {
	rc, err := sink.Open(ctx, "manifest.json")
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil, nil // nothing downloaded (an export without output)
	}
	if err != nil {
		return false, nil, fmt.Errorf("check the organized output: %w", err)
	}
	var head struct {
		OutputOrganizedBy string `json:"outputOrganizedBy"`
	}
	err = json.NewDecoder(io.LimitReader(rc, 256<<20)).Decode(&head)
	rc.Close()
	if err != nil || head.OutputOrganizedBy == "" {
		return false, nil, nil // the download has validated the manifest
	}
	if o.OrganizeOutputBy == "" && o.StatusURL == "" {
		return true, []string{fmt.Sprintf("the output is organized by %s, which the request did not ask for", head.OutputOrganizedBy)}, nil
	}
	blocks := &bulkclient.Blocks{}
	if len(o.Types) > 0 {
		blocks.Types = map[string]bool{}
		for _, t := range o.Types {
			blocks.Types[t] = true
		}
		if len(o.IncludeAssociatedData) > 0 {
			blocks.Types["Provenance"] = true // associated data comes in the blocks
		}
	}
	if len(o.Patients) > 0 {
		// The patients asked for bound the blocks; whether each is a
		// member of the Group, and so which of them owns a shared
		// resource, only verify --data can tell.
		blocks.Patients = map[string]bool{}
		for _, p := range o.Patients {
			blocks.Patients[strings.TrimPrefix(p, "Patient/")] = true
		}
	}
	_, problems, err := checkManifest(ctx, sink, blocks)
	return true, problems, err
}

func nonNilStrings(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
