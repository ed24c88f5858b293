"""The people of the example DMP: facilities, professionals, and the twenty patients with what each one's
record holds. Pure data; ``examples/dmp.py`` turns it into FHIR. All of it is invented: names, INS,
RPPS and FINESS numbers are fictitious (the INS carry a valid NIR key, nothing more)."""
from __future__ import annotations

from dataclasses import dataclass, field

# -- facilities (FINESS) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Facility:
    key: str
    finess: str
    name: str
    kind: tuple[str, str]  # organization-type (prov, dept, ...)
    sector: tuple[str, str]  # TRE_R02 secteur d'activité, for the documents it keeps
    city: str = "Lyon"
    postal: str = "69003"


FACILITIES = [
    Facility("chu", "690000011", "Centre hospitalier universitaire Lyon-Confluence", ("prov", "Healthcare Provider"),
             ("SA01", "Établissement public de santé"), postal="69002"),
    Facility("clinique", "690000037", "Clinique du Val de Saône", ("prov", "Healthcare Provider"),
             ("SA03", "Établissement privé à but lucratif"), city="Caluire-et-Cuire", postal="69300"),
    Facility("msp", "690000029", "Maison de santé pluriprofessionnelle de la Croix-Rousse",
             ("prov", "Healthcare Provider"), ("SA07", "Cabinet individuel"), postal="69004"),
    Facility("labo", "690000045", "Laboratoire de biologie médicale Bio-Rhône", ("prov", "Healthcare Provider"),
             ("SA25", "Laboratoire d'analyses et de biologie médicale"), postal="69007"),
    Facility("imagerie", "690000052", "Centre d'imagerie médicale Bellecour", ("prov", "Healthcare Provider"),
             ("SA07", "Cabinet individuel"), postal="69002"),
    Facility("pharmacie", "690000060", "Pharmacie des Terreaux", ("prov", "Healthcare Provider"),
             ("SA33", "Officine"), postal="69001"),
]
# the health insurer that reimburses everyone (ExplanationOfBenefit.insurer); no FINESS
INSURER = ("cpam", "Caisse primaire d'assurance maladie du Rhône")


# -- professionals (RPPS) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Professional:
    key: str
    rpps: str  # 11 digits; idNatPs is "8" + rpps
    family: str
    given: str
    gender: str
    facility: str  # Facility.key
    profession: tuple[str, str] = ("10", "Médecin")  # TRE_G15
    specialty: tuple[str | None, str] = ("SM26", "Qualifié en médecine générale")  # TRE_R38, or text only

    @property
    def display(self) -> str:
        title = "Dr" if self.profession[0] == "10" else ""
        return f"{title} {self.given} {self.family}".strip()


PROFESSIONALS = [
    Professional("morel", "10100000017", "MOREL", "Claire", "female", "msp"),
    Professional("lefevre", "10100000025", "LEFÈVRE", "Julien", "male", "msp"),
    Professional("garnier", "10100000033", "GARNIER", "Sophie", "female", "chu",
                 specialty=("SM04", "Cardiologie et maladies vasculaires")),
    Professional("roux", "10100000041", "ROUX", "Antoine", "male", "clinique",
                 specialty=("SM15", "Endocrinologie et métabolisme")),
    Professional("haddad", "10100000058", "HADDAD", "Karim", "male", "chu", specialty=(None, "Médecine interne")),
    Professional("benali", "10100000066", "BENALI", "Nadia", "female", "chu", specialty=(None, "Médecine d'urgence")),
    Professional("lambert", "10100000074", "LAMBERT", "Olivier", "male", "clinique",
                 specialty=(None, "Gastro-entérologie et hépatologie")),
    Professional("perrin", "10100000082", "PERRIN", "Lucie", "female", "chu", specialty=(None, "Psychiatrie")),
    Professional("vincent", "10100000090", "VINCENT", "Marc", "male", "chu", specialty=("SM38", "Néphrologie")),
    Professional("chevalier", "10100000108", "CHEVALIER", "Hélène", "female", "clinique",
                 specialty=(None, "Pédiatrie")),
    Professional("dubois", "10100000116", "DUBOIS", "Marc", "male", "imagerie", specialty=(None, "Radiologie")),
    Professional("fontaine", "10100000124", "FONTAINE", "Isabelle", "female", "labo",
                 specialty=(None, "Biologie médicale")),
    Professional("girard", "10100000132", "GIRARD", "Thomas", "male", "pharmacie",
                 profession=("21", "Pharmacien"), specialty=(None, "Pharmacie d'officine")),
]


# -- patients -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    """One patient and the shape of their record; dates are relative to the story's day (``dmp.build``)."""

    key: str
    family: str
    given: str
    gender: str
    age: int
    gp: str  # Professional.key: the treating physician (médecin traitant)
    story: str  # one line for examples/README.md and the demo
    conditions: tuple[str, ...] = ()  # ICD-10 codes (catalogue in dmp.py), current problems
    history: tuple[str, ...] = ()  # past events: procedure keys (catalogue in dmp.py)
    allergies: tuple[str, ...] = ()  # SNOMED codes of bench/dmp_data.ALLERGENS
    medications: tuple[str, ...] = ()  # ATC codes
    labs: tuple[str, ...] = ()  # LOINC codes of bench/dmp_data.LAB
    specialist: str | None = None  # Professional.key: a consultation report, and an authorisation
    stay: str | None = None  # reason of a hospital stay: hospital report and discharge letter
    imaging: str | None = None  # an imaging exam: its report
    settings: frozenset[str] = field(default_factory=frozenset)  # see SETTINGS
    city: tuple[str, str, str] = ("69003", "Lyon", "383")  # postal code, city, INSEE commune (NIR)


# what ``Patient.settings`` may hold, and what dmp.py makes of each
SETTINGS = {
    "closed": "the patient closed their DMP (Patient.active false)",
    "minor": "a child: a legal representative (RelatedPerson) holds the record's controls",
    "refuses-btg": "refused break-the-glass access (a deny Consent for purpose BTG)",
    "blocks-lambert": "blocked Dr Olivier LAMBERT (a deny Consent naming him)",
    "masked-psy": "a psychiatric consultation report masked from professionals (MASQUE_PS)",
    "hidden-result": "an imaging report not yet visible to the patient (INVISIBLE_PATIENT, awaiting the announcement consultation)",
    "donation": "an organ donation statement (document EXPPAT_1 and Consent)",
    "directives": "advance directives (document EXPPAT_3 and Consent)",
    "authorises-garnier": "authorised the cardiologist Dr Sophie GARNIER (a permit Consent)",
}

PATIENTS = [
    Patient("jeanne", "DUPONT", "Jeanne", "female", 58, "morel",
            "Hypertensive and type 2 diabetic, followed by her GP, a cardiologist and an endocrinologist; the demo's heroine.",
            conditions=("I10", "E11.9", "E78.0"), history=("appendicectomie",), allergies=("373270004",),
            medications=("A10BA02", "C09AA05", "C10AA05"), labs=("4548-4", "2345-7", "2093-3", "2160-0"),
            specialist="roux", imaging="echo-cardiaque", settings=frozenset({"authorises-garnier"})),
    Patient("robert", "PETIT", "Robert", "male", 74, "morel",
            "Atrial fibrillation under anticoagulant, diabetic: what an emergency physician needs to know.",
            conditions=("I48.9", "E11.9", "N18.3"), allergies=("387458008",),
            medications=("B01AF01", "A10BA02", "C07AB07"), labs=("2160-0", "33914-3", "2823-3", "718-7"),
            specialist="vincent", stay="fibrillation atriale rapide", city=("69004", "Lyon", "384")),
    Patient("gerard", "BERNARD", "Gérard", "male", 66, "lefevre",
            "Refused break-the-glass access to his record.",
            conditions=("I10", "K21.9"), medications=("C09AA05", "A02BC01"), labs=("2093-3", "2571-8"),
            settings=frozenset({"refuses-btg"})),
    Patient("sandrine", "ROUSSEL", "Sandrine", "female", 45, "lefevre",
            "Treated for depression: her psychiatrist's report is masked; she blocked a gastroenterologist.",
            conditions=("F32.9", "K21.9"), medications=("N06AB06", "A02BC01"), labs=("3016-3",),
            specialist="lambert", settings=frozenset({"masked-psy", "blocks-lambert"})),
    Patient("francois", "GIRAUD", "François", "male", 62, "morel",
            "Closed his DMP last year: nobody but him reads it any more.",
            conditions=("M54.5",), medications=("N02BE01",), labs=("1988-5",), settings=frozenset({"closed"})),
    Patient("lucas", "MOREAU", "Lucas", "male", 12, "chevalier",
            "A twelve-year-old with type 1 diabetes; his mother Camille is his legal representative.",
            conditions=("E10.9",), allergies=("91935009",), medications=("A10AE04", "A10AB05"),
            labs=("4548-4", "2345-7"), settings=frozenset({"minor"})),
    Patient("isabelle", "MERCIER", "Isabelle", "female", 52, "morel",
            "A suspicious mammogram: the report waits for the announcement consultation.",
            conditions=("E03.9",), medications=("H03AA01",), labs=("3016-3",), imaging="mammographie",
            settings=frozenset({"hidden-result"})),
    Patient("monique", "LAURENT", "Monique", "female", 86, "lefevre",
            "Early Alzheimer's disease; she wrote her advance directives with her GP.",
            conditions=("G30.9", "I10"), history=("prothese-hanche",), medications=("N06DA02", "C09AA05"),
            labs=("2160-0", "718-7"), settings=frozenset({"directives"}), city=("69006", "Lyon", "386")),
    Patient("nicolas", "FOURNIER", "Nicolas", "male", 41, "lefevre",
            "Healthy, asthmatic since childhood; registered his wish to donate his organs.",
            conditions=("J45.9",), allergies=("300916003",), medications=("R03AC02", "R03BA02"),
            settings=frozenset({"donation"})),
    Patient("pierre", "DURAND", "Pierre", "male", 57, "morel",
            "Myocardial infarction three years ago, stented; followed in cardiology.",
            conditions=("I25.2", "E78.0", "I10"), history=("angioplastie",), allergies=("387207008",),
            medications=("B01AC06", "C07AB07", "C10AA05", "C09AA05"), labs=("13457-7", "2085-9", "2093-3"),
            specialist="garnier", stay="douleur thoracique atypique", settings=frozenset({"authorises-garnier"})),
    Patient("louise", "BONNET", "Louise", "female", 31, "lefevre",
            "Migraine; a caesarean section two years ago.",
            conditions=("G43.9",), history=("cesarienne",), medications=("N02BE01",), labs=("718-7", "777-3")),
    Patient("hugo", "SIMON", "Hugo", "male", 24, "morel",
            "A student; appendicectomy at 19, nothing since.",
            history=("appendicectomie",), labs=("6690-2", "1988-5"), stay="appendicite aiguë"),
    Patient("helene", "MICHEL", "Hélène", "female", 69, "lefevre",
            "Chronic kidney disease stage 3 under nephrology follow-up.",
            conditions=("N18.3", "I10", "E11.9"), medications=("C09AA05", "A10BA02", "C03CA01"),
            labs=("2160-0", "33914-3", "2951-2", "2823-3"), specialist="vincent", imaging="echo-renale"),
    Patient("theo", "LEROY", "Théo", "male", 38, "morel",
            "Low back pain; an MRI of the lumbar spine.",
            conditions=("M54.5",), medications=("N02BE01",), imaging="irm-lombaire"),
    Patient("anne", "RICHARD", "Anne", "female", 63, "morel",
            "Treated for breast cancer eight years ago, in remission under hormone therapy until last year.",
            conditions=("Z85.3", "E03.9"), history=("tumorectomie",), medications=("H03AA01",),
            labs=("3016-3", "718-7"), imaging="mammographie-suivi"),
    Patient("mathieu", "FAURE", "Mathieu", "male", 49, "lefevre",
            "Type 2 diabetes discovered this year; colonoscopy for screening.",
            conditions=("E11.9", "E78.0"), history=("coloscopie",), medications=("A10BA02",),
            labs=("4548-4", "2345-7", "1742-6", "1920-8"), specialist="roux"),
    Patient("chloe", "ANDRÉ", "Chloé", "female", 27, "lefevre",
            "Asthma and a peanut allergy since childhood.",
            conditions=("J45.9",), allergies=("91935009",), medications=("R03AC02",)),
    Patient("louis", "VINCENT", "Louis", "male", 81, "morel",
            "Heart failure and atrial fibrillation; hospitalised for decompensation.",
            conditions=("I50.9", "I48.9", "N18.3"), medications=("C03CA01", "B01AF01", "C07AB07"),
            labs=("2160-0", "2823-3", "2951-2"), specialist="garnier", stay="décompensation cardiaque",
            settings=frozenset({"authorises-garnier", "directives"})),
    Patient("manon", "ROUSSEAU", "Manon", "female", 35, "morel",
            "Hypothyroidism; uses the DMP mostly to keep her reimbursements.",
            conditions=("E03.9",), medications=("H03AA01",), labs=("3016-3",)),
    Patient("jean", "DAVID", "Jean", "male", 71, "lefevre",
            "COPD and a former smoker; a chest CT scan.",
            conditions=("J44.9",), medications=("R03BA02",), labs=("718-7", "6690-2"), imaging="scanner-thoracique",
            settings=frozenset({"donation"})),
]
