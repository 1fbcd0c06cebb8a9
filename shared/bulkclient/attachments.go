package bulkclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"sync"
)

// attachment is one DocumentReference content.attachment.url to fetch.
type attachment struct {
	url, contentType, name string
}

// attachments downloads the content.attachment.url files of every
// DocumentReference output file into attachments/, as SMART's
// bulk-data-client does. Relative URLs resolve against the FHIR base. The
// bearer token goes only to the FHIR server's own origin: a link to another
// host never receives it. Inline (data) attachments stay in the
// resource. An attachment already in the sink is kept (resume).
func (c *Client) attachments(ctx context.Context, sum *Summary) error {
	var list []attachment
	for _, f := range sum.FileList {
		if f.Kind != "output" || f.Type != "DocumentReference" {
			continue
		}
		found, err := c.scanAttachments(ctx, f.Name)
		if err != nil {
			return err
		}
		list = append(list, found...)
	}
	if len(list) == 0 {
		return nil
	}
	c.rep.Logf("downloading %d DocumentReference attachments", len(list))
	sem := make(chan struct{}, c.opts.Parallel)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for _, a := range list {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := c.fetchAttachment(ctx, a)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				sum.Attachments++
			} else if firstErr == nil {
				firstErr = err
			}
		}()
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

func (c *Client) scanAttachments(ctx context.Context, name string) ([]attachment, error) {
	r, err := c.sink.Open(ctx, name)
	if err != nil {
		return nil, fail("attachments: %s: %v", name, err)
	}
	defer r.Close()
	base, err := url.Parse(c.opts.Server + "/")
	if err != nil {
		return nil, fail("attachments: %v", err)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	var out []attachment
	for sc.Scan() {
		var doc struct {
			ID      string `json:"id"`
			Content []struct {
				Attachment struct {
					URL         string `json:"url"`
					ContentType string `json:"contentType"`
				} `json:"attachment"`
			} `json:"content"`
		}
		if json.Unmarshal(sc.Bytes(), &doc) != nil {
			continue
		}
		for i, ct := range doc.Content {
			if ct.Attachment.URL == "" {
				continue
			}
			u, err := base.Parse(ct.Attachment.URL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				c.rep.Logf("attachment %q of DocumentReference/%s skipped: not an http(s) URL", ct.Attachment.URL, doc.ID)
				continue
			}
			out = append(out, attachment{url: u.String(), contentType: ct.Attachment.ContentType,
				name: fmt.Sprintf("attachments/DocumentReference-%s.%d%s", fileID(doc.ID), i+1, extension(ct.Attachment.ContentType))})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fail("attachments: %s: %v", name, err)
	}
	return out, nil
}

func (c *Client) fetchAttachment(ctx context.Context, a attachment) error {
	if r, err := c.sink.Open(ctx, a.name); err == nil {
		r.Close()
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail("attachment %s: %v", a.name, err)
	}
	resp, err := c.send(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url, nil)
		if err != nil {
			return nil, err
		}
		accept := a.contentType
		if accept == "" {
			accept = "*/*"
		}
		req.Header.Set("Accept", accept)
		return req, nil
	}, sameOrigin(a.url, c.opts.Server))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail("attachment %s: %s", a.url, describe(resp))
	}
	f, err := c.sink.Create(ctx, a.name)
	if err != nil {
		return fail("attachment %s: %v", a.name, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Abort()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail("attachment %s: %v", a.url, err)
	}
	if err := f.Commit(); err != nil {
		return fail("attachment %s: %v", a.name, err)
	}
	return nil
}

// sameOrigin reports whether u is on the origin (scheme, host, port) of base.
func sameOrigin(u, base string) bool {
	a, err1 := url.Parse(u)
	b, err2 := url.Parse(base)
	return err1 == nil && err2 == nil && a.Scheme == b.Scheme && a.Host == b.Host
}

func extension(contentType string) string {
	switch contentType {
	case "application/pdf":
		return ".pdf"
	case "text/plain":
		return ".txt"
	case "text/html":
		return ".html"
	case "application/xml", "text/xml":
		return ".xml"
	case "application/json":
		return ".json"
	case "image/png":
		return ".png"
	case "image/jpeg":
		return ".jpg"
	}
	return ""
}

// fileID keeps a FHIR id's characters ([A-Za-z0-9-.]) and replaces others,
// so an id never leaves the attachments folder.
func fileID(id string) string {
	out := []byte(id)
	for i, b := range out {
		if !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '.') {
			out[i] = '_'
		}
	}
	if len(out) == 0 {
		return "_"
	}
	return string(out)
}
