package settings

// PatientIndexPrefix is where, in the export bucket, the S3 source keeps
// its patient indexes (ndjsonsource.IndexStore): outside the export prefix,
// so the retention rule of the exports does not remove them with a job. The
// stack grants plan and export access to it and expires what a changed
// source left behind.
const PatientIndexPrefix = "patient-index/"
