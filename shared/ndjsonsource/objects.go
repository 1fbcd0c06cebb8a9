package ndjsonsource

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// Object is one NDJSON file of a source.
type Object struct {
	Name    string // slash-separated, relative to the source root
	Size    int64
	Version string // changes when the content does (mtime, ETag)
}

// Objects is where a source's NDJSON files live: a directory, or an S3
// prefix (package s3source).
type Objects interface {
	// List returns every *.ndjson object.
	List(ctx context.Context) ([]Object, error)
	// Open reads the byte range [start, end) of an object. With a version
	// (from List), an object whose version is no longer that one is an
	// *export.SourceChangedError, so a read never mixes two contents.
	Open(ctx context.Context, name, version string, start, end int64) (io.ReadCloser, error)
}

// Dir is Objects in a local directory (any depth).
type Dir string

// List implements Objects.
func (d Dir) List(_ context.Context) ([]Object, error) {
	var out []Object
	err := filepath.WalkDir(string(d), func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".ndjson") {
			return nil
		}
		rel, err := filepath.Rel(string(d), path)
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		out = append(out, Object{Name: filepath.ToSlash(rel), Size: info.Size(), Version: fileVersion(info)})
		return nil
	})
	return out, err
}

// fileVersion is a local file's version: its size and modification time.
func fileVersion(info fs.FileInfo) string {
	return fmt.Sprintf("%d@%d", info.Size(), info.ModTime().UnixNano())
}

// Open implements Objects.
func (d Dir) Open(_ context.Context, name, version string, start, end int64) (io.ReadCloser, error) {
	local := filepath.FromSlash(name)
	if !filepath.IsLocal(local) {
		return nil, fmt.Errorf("object %q is outside the source directory", name)
	}
	f, err := os.Open(filepath.Join(string(d), local))
	if err != nil {
		return nil, err
	}
	if version != "" {
		// The open file's own metadata: what is read is this content.
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if v := fileVersion(info); v != version {
			f.Close()
			return nil, &export.SourceChangedError{Object: name, Reason: fmt.Sprintf("size@mtime was %s when planned, is %s now", version, v)}
		}
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, end-start), f}, nil
}
