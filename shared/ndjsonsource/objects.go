package ndjsonsource

import (
	"context"
	"errors"
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

// List implements Objects. Entries that cannot be read as files (FIFOs,
// sockets, devices, broken symbolic links, unreadable files) are skipped;
// Problems reports them.
func (d Dir) List(_ context.Context) ([]Object, error) {
	var out []Object
	err := d.walk(func(rel string, info fs.FileInfo, problem string) {
		if problem == "" {
			out = append(out, Object{Name: rel, Size: info.Size(), Version: fileVersion(info)})
		}
	})
	return out, err
}

// Problems lists the *.ndjson entries List skips, each with the reason,
// for the server to report at start-up.
func (d Dir) Problems() ([]string, error) {
	var out []string
	err := d.walk(func(rel string, _ fs.FileInfo, problem string) {
		if problem != "" {
			out = append(out, rel+": "+problem)
		}
	})
	return out, err
}

// walk calls fn for every *.ndjson entry below d with its (followed)
// metadata, or why it cannot be read. A FIFO is never opened: opening one
// blocks until something writes to it.
func (d Dir) walk(fn func(rel string, info fs.FileInfo, problem string)) error {
	return filepath.WalkDir(string(d), func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if path != string(d) && errors.Is(err, fs.ErrPermission) {
				rel, _ := filepath.Rel(string(d), path)
				fn(filepath.ToSlash(rel), nil, "directory not readable, skipped")
				return filepath.SkipDir
			}
			return err
		}
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".ndjson") {
			return nil
		}
		rel, err := filepath.Rel(string(d), path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := os.Stat(path) // follows symbolic links
		switch {
		case err != nil && e.Type()&fs.ModeSymlink != 0:
			fn(rel, nil, "broken symbolic link, skipped")
		case err != nil:
			fn(rel, nil, "cannot be read ("+errors.Unwrap(err).Error()+"), skipped")
		case !info.Mode().IsRegular():
			fn(rel, nil, fmt.Sprintf("not a regular file (%s), skipped", info.Mode().Type()))
		default:
			f, err := os.Open(path)
			if err != nil {
				fn(rel, nil, "cannot be opened ("+errors.Unwrap(err).Error()+"), skipped")
				return nil
			}
			f.Close()
			fn(rel, info, "")
		}
		return nil
	})
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
