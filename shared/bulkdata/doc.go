// Package bulkdata is the FHIR Bulk Data Access (IG v2, with STU3 additions)
// protocol surface that does not depend on where data comes from: parsing and
// validating a kick-off (query string or Parameters body, Accept and Prefer
// headers, lenient handling) into a Request, and the completion manifest.
//
// Validation collects every problem at once: a rejected kick-off carries one
// OperationOutcome issue per bad parameter, each naming the parameter and the
// reason. Under Prefer: handling=lenient the same problems become warnings in
// Request.Ignored and the parameter is dropped.
package bulkdata
