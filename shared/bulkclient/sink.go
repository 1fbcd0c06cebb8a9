package bulkclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Sink is where an export's files go: a local folder (DirSink) or an object
// store prefix (package s3sink). Names are slash-separated paths below the
// sink's root. A file becomes visible under its name only when it is
// committed, so a name that exists is a complete file: that is what makes
// an interrupted export resumable file by file.
type Sink interface {
	// Location names the sink in messages: a folder or s3://bucket/prefix.
	Location() string
	// Open reads a complete file; an absent one is fs.ErrNotExist.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// Create starts a file; nothing is visible under name until Commit.
	Create(ctx context.Context, name string) (SinkFile, error)
	// List returns every name below the root, including unfinished ones.
	List(ctx context.Context) ([]string, error)
	// Remove deletes one name; an absent one is not an error.
	Remove(ctx context.Context, name string) error
}

// SinkFile is a file being written.
type SinkFile interface {
	io.Writer
	// Commit makes the file visible under its name, complete.
	Commit() error
	// Abort discards what was written.
	Abort()
}

// DirSink writes into a local folder: each file is written to NAME.part,
// synced and renamed when complete.
type DirSink struct{ Dir string }

// Location implements Sink.
func (d DirSink) Location() string { return d.Dir }

func (d DirSink) path(name string) string { return filepath.Join(d.Dir, filepath.FromSlash(name)) }

// Open implements Sink.
func (d DirSink) Open(_ context.Context, name string) (io.ReadCloser, error) {
	return os.Open(d.path(name))
}

// Create implements Sink.
func (d DirSink) Create(_ context.Context, name string) (SinkFile, error) {
	final := d.path(name)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(final + ".part")
	if err != nil {
		return nil, err
	}
	return &dirFile{f: f, w: bufio.NewWriterSize(f, 256<<10), final: final}, nil
}

// List implements Sink.
func (d DirSink) List(_ context.Context) ([]string, error) {
	var names []string
	err := filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == d.Dir {
				return filepath.SkipDir
			}
			return err
		}
		if e.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(d.Dir, p)
		if err != nil {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return names, err
}

// Remove implements Sink; folders it empties are removed too.
func (d DirSink) Remove(_ context.Context, name string) error {
	err := os.Remove(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if dir := filepath.Dir(d.path(name)); err == nil && dir != filepath.Clean(d.Dir) {
		os.Remove(dir) // only succeeds when empty
	}
	return err
}

type dirFile struct {
	f     *os.File
	w     *bufio.Writer
	final string
}

func (f *dirFile) Write(p []byte) (int, error) { return f.w.Write(p) }

func (f *dirFile) Commit() error {
	err := f.w.Flush()
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.f.Name(), f.final)
	}
	if err != nil {
		os.Remove(f.f.Name())
	}
	return err
}

func (f *dirFile) Abort() {
	f.f.Close()
	os.Remove(f.f.Name())
}

// writeFile stores b under name in one piece.
func writeFile(ctx context.Context, s Sink, name string, b []byte) error {
	f, err := s.Create(ctx, name)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}

// readFile reads a small file (state, manifest) of at most 256 MiB.
func readFile(ctx context.Context, s Sink, name string) ([]byte, error) {
	r, err := s.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, 256<<20))
}

// countLines counts the non-blank lines of a complete file and its size.
func countLines(ctx context.Context, s Sink, name string) (n, size int64, err error) {
	r, err := s.Open(ctx, name)
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		line, err := br.ReadSlice('\n')
		size += int64(len(line))
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = br.ReadSlice('\n')
			size += int64(len(line))
			line = []byte{'x'} // a long line is not blank
		}
		if len(bytes.TrimSpace(line)) > 0 {
			n++
		}
		if err == io.EOF {
			return n, size, nil
		}
		if err != nil {
			return n, size, err
		}
	}
}

// ParseS3URL splits s3://bucket/prefix; the prefix ends with "/" unless
// empty.
func ParseS3URL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket", u)
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return bucket, prefix, nil
}
