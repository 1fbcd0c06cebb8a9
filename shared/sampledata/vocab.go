package sampledata

import "encoding/base64"

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

var (
	genders     = []string{"female", "male"}
	families    = []string{"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson"}
	givens      = []string{"James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Wei", "Aisha", "Mateo", "Priya", "Olga", "Kenji"}
	cities      = []string{"Boston", "Worcester", "Springfield", "Cambridge", "Lowell", "Brockton", "Quincy", "Lynn", "Newton", "Somerville"}
	streets     = []string{"Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Main"}
	orgPrefixes = []string{"Bay State", "Harbor", "Riverside", "Commonwealth", "North Shore", "Pioneer Valley", "Cape", "Berkshire"}
	orgKinds    = []string{"Medical Center", "Health", "Clinic", "Community Hospital", "Family Practice"}
	wards       = []string{"Emergency", "Outpatient Clinic", "Radiology", "Laboratory", "Pediatrics", "Cardiology"}
	roleCodes   = []string{"HOSP", "OUTPHARM", "ER", "CARD", "PEDC"}
	medStatuses = []string{"active", "completed", "stopped"}

	encounterClasses = [][2]string{{"AMB", "ambulatory"}, {"EMER", "emergency"}, {"IMP", "inpatient encounter"}, {"VR", "virtual"}}
	conditions       = [][2]string{
		{"44054006", "Diabetes mellitus type 2"}, {"38341003", "Hypertensive disorder"}, {"195967001", "Asthma"},
		{"55822004", "Hyperlipidemia"}, {"40055000", "Chronic sinusitis"}, {"10509002", "Acute bronchitis"},
		{"235595009", "Gastroesophageal reflux disease"}, {"271737000", "Anemia"}, {"35489007", "Depressive disorder"},
		{"399211009", "History of myocardial infarction"},
	}
	allergies = [][3]string{
		{"91936005", "Allergy to penicillin", "medication"}, {"300913006", "Shellfish allergy", "food"},
		{"232350006", "House dust mite allergy", "environment"}, {"91935009", "Allergy to peanuts", "food"},
	}
	vaccines = [][2]string{
		{"140", "Influenza, seasonal, injectable, preservative free"}, {"208", "SARS-COV-2 (COVID-19) vaccine, mRNA"},
		{"113", "Td (adult) preservative free"}, {"133", "Pneumococcal conjugate PCV 13"}, {"43", "Hep B, adult"},
	}
	procedures = [][2]string{
		{"73761001", "Colonoscopy"}, {"80146002", "Appendectomy"}, {"430193006", "Medication reconciliation"},
		{"710824005", "Assessment of health and social care needs"}, {"252160004", "Standard pregnancy test"},
	}
	medications = [][2]string{
		{"860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"}, {"314076", "Lisinopril 10 MG Oral Tablet"},
		{"617312", "Atorvastatin 10 MG Oral Tablet"}, {"895994", "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler"},
		{"197361", "Amlodipine 5 MG Oral Tablet"}, {"313782", "Acetaminophen 325 MG Oral Tablet"},
	}
	observations = []struct {
		category, code, display, unit string
		lo, hi                        float64
	}{
		{"vital-signs", "8867-4", "Heart rate", "/min", 55, 110},
		{"vital-signs", "8480-6", "Systolic blood pressure", "mm[Hg]", 100, 170},
		{"vital-signs", "8462-4", "Diastolic blood pressure", "mm[Hg]", 60, 100},
		{"vital-signs", "29463-7", "Body weight", "kg", 45, 120},
		{"vital-signs", "8302-2", "Body height", "cm", 150, 195},
		{"vital-signs", "39156-5", "Body mass index", "kg/m2", 18, 38},
		{"vital-signs", "8310-5", "Body temperature", "Cel", 36, 38.5},
		{"vital-signs", "9279-1", "Respiratory rate", "/min", 12, 22},
		{"laboratory", "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70, 220},
		{"laboratory", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.5, 10},
		{"laboratory", "2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140, 280},
		{"laboratory", "718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 10, 17},
		{"laboratory", "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.4},
	}
)
