package main

// Name lists for the generated people. Common Danish names; any match with a
// real person is a coincidence of common names (the CPR numbers are invalid
// dates, see fakeCPR).
var firstNames = []string{
	"Anne", "Mette", "Kirsten", "Hanne", "Helle", "Susanne", "Lene", "Camilla", "Louise",
	"Maria", "Marianne", "Pia", "Tina", "Charlotte", "Ida", "Freja", "Sofie", "Emma",
	"Signe", "Astrid", "Birgitte", "Karen", "Inge", "Ulla", "Bodil", "Dorthe", "Gitte",
	"Jytte", "Åse", "Rikke", "Malene", "Line", "Jens", "Peter", "Lars", "Søren", "Henrik",
	"Niels", "Michael", "Thomas", "Anders", "Morten", "Jesper", "Rasmus", "Mads",
	"Frederik", "Kasper", "Martin", "Christian", "Bjørn", "Jørgen", "Ole", "Poul",
	"Torben", "Troels", "Mikkel", "Jonas", "Emil", "Bo", "Kåre", "Steen", "Jakob",
}

var middleNames = []string{
	"Marie", "Louise", "Kristine", "Bøgh", "Kjær", "Holm", "Skov", "Dam", "Lykke", "Juul",
}

var lastNames = []string{
	"Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen",
	"Sørensen", "Rasmussen", "Jørgensen", "Petersen", "Madsen", "Kristensen", "Olsen",
	"Thomsen", "Christiansen", "Poulsen", "Johansen", "Møller", "Mortensen", "Knudsen",
	"Jakobsen", "Mikkelsen", "Lund", "Holm", "Schmidt", "Eriksen", "Frederiksen",
	"Henriksen", "Laursen", "Østergaard", "Bøgh", "Kjær", "Dahl", "Skov", "Vestergaard",
	"Bach", "Lauridsen", "Mølgaard", "Nørgaard", "Søgaard", "Brødsgaard", "Ærbo", "Winther",
}

// Job titles for staff in general, used where a unit lists none of its own.
var generalTitles = []string{
	"Administrativ medarbejder", "Konsulent", "Specialkonsulent", "Sagsbehandler",
	"Fuldmægtig", "Projektleder", "Studentermedhjælper",
}

// Job titles the synthetic generator draws from.
var allTitles = []string{
	"Pædagog", "Pædagogmedhjælper", "Dagplejer", "Lærer", "Skolesekretær", "Socialrådgiver",
	"Psykolog", "Sundhedsplejerske", "Social- og sundhedshjælper",
	"Social- og sundhedsassistent", "Sygeplejerske", "Fysioterapeut", "Ergoterapeut",
	"Vejarbejder", "Gartner", "Ingeniør", "Byplanlægger", "Miljømedarbejder",
	"Borgerservicemedarbejder", "Bibliotekar", "Kulturmedarbejder", "Økonomimedarbejder",
	"Lønkonsulent", "HR-partner", "IT-supporter", "Systemudvikler", "Jurist",
	"Administrativ medarbejder", "Konsulent", "Specialkonsulent", "Teamleder",
}
